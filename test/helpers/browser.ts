import { existsSync } from 'node:fs';

/**
 * Debian's Chromium, driven by playwright-core (which downloads no browser of its own). `.ci/run`
 * installs it and sets FREESH_REQUIRE_BROWSER, so CI fails rather than skips when it is missing.
 */
export const CHROMIUM = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => p && existsSync(p));

if (!CHROMIUM && process.env.FREESH_REQUIRE_BROWSER) throw new Error('FREESH_REQUIRE_BROWSER is set but no Chromium was found (install Debian\'s `chromium`)');

export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];
