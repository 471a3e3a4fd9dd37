/**
 * `freesh/redis`: the cluster state on Redis, for a fleet of router replicas. A subpath of its own so
 * that only users who import it load ioredis (an optional peer dependency); the core never does.
 */
export { createRedisStateStore, RedisStateStore, type RedisConnection, type RedisStateStoreOptions } from './redis-store.js';
