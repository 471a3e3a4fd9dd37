import { expect, it } from 'vitest';
import { oneSlotRouter } from '../helpers/one-slot-router.js';

const turn = () => new Promise((resolve) => setImmediate(resolve));

it('closing the router refuses the queued requests and one still on its way to the queue alike, with 503', async () => {
  const h = oneSlotRouter();
  const running = h.send('running');
  const queued = h.send('queued');
  await turn();
  expect(h.upstream.labels()).toEqual(['running']);
  // Dispatched before the close, it reaches its backend's queue only after (it is being predicted).
  const arriving = h.send('arriving');
  const closing = h.router.close();
  const statuses = Promise.all([queued, arriving]);
  expect(await Promise.race([statuses, new Promise((resolve) => setTimeout(() => resolve('still waiting'), 2_000))])).toEqual([503, 503]);
  h.upstream.call('running').complete(1);
  await running;
  await closing;
  expect(h.upstream.labels()).toEqual(['running']);
});
