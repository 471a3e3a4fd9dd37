import { describe, expect, it } from 'vitest';
import { MemoryStateStore } from '../../src/state/memory-store.js';

describe('MemoryStateStore', () => {
  it('reports unseen backends as healthy and idle', async () => {
    const store = new MemoryStateStore();
    expect((await store.snapshot(['a'], 0)).get('a')).toEqual({ inFlight: 0, healthy: true });
  });

  it('counts leases per backend and forgets released ones; double release is a no-op', async () => {
    const store = new MemoryStateStore();
    await store.acquire({ id: 'l1', backendId: 'a', expiresAtMs: 100 });
    await store.acquire({ id: 'l2', backendId: 'a', expiresAtMs: 100 });
    await store.acquire({ id: 'l2', backendId: 'a', expiresAtMs: 100 });
    await store.acquire({ id: 'l3', backendId: 'b', expiresAtMs: 100 });
    let snap = await store.snapshot(['a', 'b'], 0);
    expect([snap.get('a')?.inFlight, snap.get('b')?.inFlight]).toEqual([2, 1]);
    await store.release('l1');
    await store.release('l1');
    await store.release('unknown');
    snap = await store.snapshot(['a', 'b'], 0);
    expect([snap.get('a')?.inFlight, snap.get('b')?.inFlight]).toEqual([1, 1]);
  });

  it('drops expired leases, so a crashed holder cannot leak capacity', async () => {
    const store = new MemoryStateStore();
    await store.acquire({ id: 'old', backendId: 'a', expiresAtMs: 50 });
    await store.acquire({ id: 'new', backendId: 'a', expiresAtMs: 500 });
    expect((await store.snapshot(['a'], 49)).get('a')?.inFlight).toBe(2);
    expect((await store.snapshot(['a'], 50)).get('a')?.inFlight).toBe(1);
    expect((await store.snapshot(['a'], 500)).get('a')?.inFlight).toBe(0);
  });

  it('keeps an unhealthy mark until its time passes', async () => {
    const store = new MemoryStateStore();
    await store.markUnhealthy('a', 100);
    expect((await store.snapshot(['a'], 99)).get('a')?.healthy).toBe(false);
    expect((await store.snapshot(['a'], 100)).get('a')?.healthy).toBe(true);
  });
});
