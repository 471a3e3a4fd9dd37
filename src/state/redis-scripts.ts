import type { Cluster, Redis } from 'ioredis';

/*
 * The Lua behind `RedisStateStore`. Each script runs atomically in Redis, touches only the keys it is
 * given in KEYS (all under one hash tag, so they share a Redis Cluster slot), and reads time with
 * `TIME`, so every expiry is measured by one clock whatever the callers' clocks say. Redis 5 or later
 * is needed: a script that reads `TIME` and then writes relies on effects replication.
 *
 * Numbers go into Redis as `%.3f` (times in ms, to the microsecond) or `%.17g` (values, exactly), never
 * through Lua's default `%.14g`, and come back as strings, because a Lua number returned to the client
 * is truncated to an integer.
 */

/** Shared helpers: `now` in ms by Redis's clock, exact number formats, and lease-set upkeep. */
const PRELUDE = `
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local function ms(x) return string.format('%.3f', x) end
local function exact(x) return string.format('%.17g', x) end
local function purge(leases, tags)
  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', ms(now))
  for i = 1, #expired, 500 do
    redis.call('HDEL', tags, unpack(expired, i, math.min(i + 499, #expired)))
  end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', leases, '-inf', ms(now)) end
end
local function keep(leases, tags)
  local last = redis.call('ZRANGE', leases, -1, -1, 'WITHSCORES')
  if last[2] then
    local ttl = math.ceil(tonumber(last[2]) - now) + 1000
    redis.call('PEXPIRE', leases, ttl)
    redis.call('PEXPIRE', tags, ttl)
  end
end
`;

/**
 * Grants a lease when fewer than the limit are unexpired, after dropping expired ones (and their tags).
 * KEYS: leases, tags. ARGV: limit (-1: none), ttlMs, lease id, tag (absent: untagged). Returns 1 or 0.
 * The lease sets expire a second after their last lease, so a backend nobody uses leaves nothing behind.
 */
export const TRY_ACQUIRE = `${PRELUDE}
purge(KEYS[1], KEYS[2])
local limit = tonumber(ARGV[1])
if limit >= 0 and redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], ms(now + tonumber(ARGV[2])), ARGV[3])
if ARGV[4] then redis.call('HSET', KEYS[2], ARGV[3], ARGV[4]) end
keep(KEYS[1], KEYS[2])
return 1
`;

/**
 * Extends an unexpired lease to ttlMs from now; an expired one is removed (with its tag), since
 * expiry is final. KEYS: leases, tags. ARGV: lease id, ttlMs. Returns 1 when renewed, else 0.
 */
export const RENEW = `${PRELUDE}
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
if tonumber(score) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', ms(now + tonumber(ARGV[2])), ARGV[1])
keep(KEYS[1], KEYS[2])
return 1
`;

/**
 * Every backend asked for, in one round trip: drops expired leases, then counts them, by tag too, and
 * reads health (dropping a mark that has run out). KEYS: health, then leases and tags of each backend
 * in ARGV order. ARGV: backend ids. Returns, per backend, {count, healthy (1/0), {tag, n, tag, n…}}.
 */
export const SNAPSHOT = `${PRELUDE}
local out = {}
for i = 1, #ARGV do
  local leases, tags = KEYS[2 * i], KEYS[2 * i + 1]
  purge(leases, tags)
  local counts, order = {}, {}
  for _, tag in ipairs(redis.call('HVALS', tags)) do
    if not counts[tag] then counts[tag] = 0; order[#order + 1] = tag end
    counts[tag] = counts[tag] + 1
  end
  local byTag = {}
  for _, tag in ipairs(order) do byTag[#byTag + 1] = tag; byTag[#byTag + 1] = counts[tag] end
  local healthy = 1
  local untilMs = redis.call('HGET', KEYS[1], ARGV[i])
  if untilMs then
    if tonumber(untilMs) > now then healthy = 0 else redis.call('HDEL', KEYS[1], ARGV[i]) end
  end
  out[i] = {redis.call('ZCARD', leases), healthy, byTag}
end
return out
`;

/** Marks a backend unhealthy until forMs from now, unless a mark ending later holds. KEYS: health. ARGV: backend id, forMs. */
export const MARK_UNHEALTHY = `${PRELUDE}
local untilMs = now + tonumber(ARGV[2])
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current or tonumber(current) < untilMs then redis.call('HSET', KEYS[1], ARGV[1], ms(untilMs)) end
return 0
`;

/**
 * Applies counter updates in order: add, then raise to atLeast, then to floor. KEYS: counters.
 * ARGV: per update key, add, atLeast ('' for none), floor ('' for none). Returns {key, value…} as strings.
 */
export const UPDATE_COUNTERS = `
local out = {}
for i = 1, #ARGV, 4 do
  local value = (tonumber(redis.call('HGET', KEYS[1], ARGV[i])) or 0) + tonumber(ARGV[i + 1])
  if ARGV[i + 2] ~= '' then value = math.max(value, tonumber(ARGV[i + 2])) end
  if ARGV[i + 3] ~= '' then value = math.max(value, tonumber(ARGV[i + 3])) end
  local text = string.format('%.17g', value)
  redis.call('HSET', KEYS[1], ARGV[i], text)
  out[#out + 1] = ARGV[i]
  out[#out + 1] = text
end
return out
`;

/**
 * Adds amounts to decaying rates, each field holding "<value> <atMs>": the stored value is decayed by
 * exp(−Δt/τ) to now, then the amount added. KEYS: rates. ARGV: tauMs, then key and amount pairs.
 */
export const ADD_RATES = `${PRELUDE}
local tau = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  local value = tonumber(ARGV[i + 1])
  local stored = redis.call('HGET', KEYS[1], ARGV[i])
  if stored then
    local sep = string.find(stored, ' ', 1, true)
    local old, at = tonumber(string.sub(stored, 1, sep - 1)), tonumber(string.sub(stored, sep + 1))
    value = value + old * math.exp(-math.max(0, now - at) / tau)
  end
  redis.call('HSET', KEYS[1], ARGV[i], exact(value) .. ' ' .. ms(now))
end
return 0
`;

/** Reads decaying rates with the time to decay them to. KEYS: rates. Returns {now, {key, "<value> <atMs>"…}}. */
export const READ_RATES = `${PRELUDE}
return {ms(now), redis.call('HGETALL', KEYS[1])}
`;

/**
 * Takes a role for ttlMs when nobody holds it, or renews it for its holder (SET … PX: the lease runs
 * out by Redis's clock). KEYS: lead. ARGV: holder, ttlMs. Returns 1 when the holder holds it after.
 */
export const TRY_LEAD = `
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', math.max(1, math.ceil(tonumber(ARGV[2]))))
return 1
`;

/** Gives a role up only if the holder holds it (compare and delete). KEYS: lead. ARGV: holder. */
export const RESIGN = `
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
`;

/**
 * Publishes a plan: next version, the plan stored as JSON with its version (written last, so it wins
 * over any `version` the record carried), and the same JSON sent to watchers. KEYS: plan-version, plan.
 * ARGV: the plan as a JSON object, the channel. Returns the version.
 */
export const PUBLISH_PLAN = `
local version = redis.call('INCR', KEYS[1])
local record = ARGV[1]
local published
if record == '{}' then
  published = '{"version":' .. version .. '}'
else
  published = string.sub(record, 1, -2) .. ',"version":' .. version .. '}'
end
redis.call('SET', KEYS[2], published)
redis.call('PUBLISH', ARGV[2], published)
return version
`;

/**
 * Stores a source's telemetry as {"record":…, "storedAtMs":…, "expiresAtMs":…} by Redis's clock,
 * replacing its previous one. KEYS: telemetry. ARGV: source, the record as JSON, ttlMs.
 */
export const PUT_TELEMETRY = `${PRELUDE}
redis.call('HSET', KEYS[1], ARGV[1],
  '{"record":' .. ARGV[2] .. ',"storedAtMs":' .. ms(now) .. ',"expiresAtMs":' .. ms(now + tonumber(ARGV[3])) .. '}')
return 0
`;

/** Drops expired telemetry and returns {now, stored JSON…} of the rest. KEYS: telemetry. */
export const READ_TELEMETRY = `${PRELUDE}
local out = {ms(now)}
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local expiresAtMs = tonumber(string.match(entries[i + 1], '"expiresAtMs":([^,}]+)}$'))
  if expiresAtMs <= now then redis.call('HDEL', KEYS[1], entries[i]) else out[#out + 1] = entries[i + 1] end
end
return out
`;

/*
 * The shared least-laxity-first queue (`QueueingStore` in ./store.ts). Keys of one backend B, beside
 * its leases and tags: `P:queue:B` ZSET ticket id → latest start (Redis time, ms); `P:tickets:B` HASH
 * ticket id → "owner\ntag"; `P:grants:B` HASH ticket id → "lease\nowner\ntag" with `P:grant-expiry:B`
 * ZSET ticket id → the lease's expiry: grants made and not yet taken. For the fleet: `P:owners` HASH
 * replica → alive-until (Redis time), `P:slot-limits` HASH B → "limit ttlMs urgentWithinMs" (the last
 * given for B, so a release or a poll grants under them; urgentWithinMs −1: no tenant fairness) and
 * `P:counters:fair-share` HASH tenant → virtual token counter (kept by the replicas). A tag is written
 * `+tag`, or `-` for none. KEYS of every queue script: leases, tags, queue, tickets, grants,
 * grant-expiry, owners, slot-limits, fair-share counters.
 */
const QUEUE_PRELUDE = `${PRELUDE}
local k = {
  leases = KEYS[1], tags = KEYS[2], queue = KEYS[3], tickets = KEYS[4],
  grants = KEYS[5], grant_expiry = KEYS[6], owners = KEYS[7], limits = KEYS[8], counters = KEYS[9],
}
-- How many of the most urgent tickets on time the fairest tenant is looked for among.
local FAIR_WINDOW = 32
local function split(s)
  local parts = {}
  for part in string.gmatch(s, '[^\\n]+') do parts[#parts + 1] = part end
  return parts
end
-- A grant not taken before its lease expired goes with the lease: its owner is gone.
local function purge_grants()
  local expired = redis.call('ZRANGEBYSCORE', k.grant_expiry, '-inf', ms(now))
  for i = 1, #expired do redis.call('HDEL', k.grants, expired[i]) end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', k.grant_expiry, '-inf', ms(now)) end
end
-- The ticket to grant next: the most urgent still on time (latest start not passed); with tenant
-- fairness, unless its latest start is within urgent_within, the most urgent ticket of the tenant
-- with the least counter among the FAIR_WINDOW most urgent on time; late tickets only when none is on time.
local function next_ticket(urgent_within)
  local on_time = redis.call('ZRANGEBYSCORE', k.queue, ms(now), '+inf', 'WITHSCORES', 'LIMIT', 0, urgent_within >= 0 and FAIR_WINDOW or 1)
  if #on_time == 0 then return redis.call('ZRANGE', k.queue, 0, 0)[1] end
  if urgent_within < 0 or tonumber(on_time[2]) <= now + urgent_within then return on_time[1] end
  local best, best_counter = on_time[1], nil
  for i = 1, #on_time, 2 do
    local info = redis.call('HGET', k.tickets, on_time[i])
    local tenant = info and split(info)[3]
    local counter = tonumber(tenant and redis.call('HGET', k.counters, string.sub(tenant, 2)) or '0') or 0
    if best_counter == nil or counter < best_counter then best, best_counter = on_time[i], counter end
  end
  return best
end
-- Grants free slots to waiting tickets in next_ticket's order; tickets of owners no longer alive are
-- dropped. The owner hears of a grant on its channel (the message: the backend).
local function grant_freed(backend, limit, ttl, urgent_within, channel_prefix)
  while redis.call('ZCARD', k.leases) < limit do
    local id = next_ticket(urgent_within)
    if not id then break end
    redis.call('ZREM', k.queue, id)
    local info = redis.call('HGET', k.tickets, id)
    redis.call('HDEL', k.tickets, id)
    if info then
      local owner, tag = unpack(split(info))
      if tonumber(redis.call('HGET', k.owners, owner) or '0') > now then
        local lease = 'q' .. id
        redis.call('ZADD', k.leases, ms(now + ttl), lease)
        if tag ~= '-' then redis.call('HSET', k.tags, lease, string.sub(tag, 2)) end
        redis.call('HSET', k.grants, id, lease .. '\\n' .. owner .. '\\n' .. tag)
        redis.call('ZADD', k.grant_expiry, ms(now + ttl), id)
        redis.call('PUBLISH', channel_prefix .. owner, backend)
      end
    end
  end
  keep(k.leases, k.tags)
end
local function grant_under_known_limit(backend, channel_prefix)
  local known = redis.call('HGET', k.limits, backend)
  if known then
    local limit, ttl, urgent_within = string.match(known, '(%S+) (%S+) (%S+)')
    grant_freed(backend, tonumber(limit), tonumber(ttl), tonumber(urgent_within), channel_prefix)
  end
end
`;

/**
 * A slot at once when one is free and no ticket waits (after granting freed slots to waiting tickets),
 * else the ticket queued. ARGV: backend, limit, ttlMs, lease id, tag, ticket id, owner, owner ttlMs,
 * latest start in ms from now, grant channel prefix, tenant (`+name` or `-`), urgentWithinMs (−1: no
 * tenant fairness). Returns the lease id, or nothing when queued.
 */
export const ACQUIRE_OR_QUEUE = `${QUEUE_PRELUDE}
local backend, limit, ttl, urgent_within = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[12])
redis.call('HSET', k.limits, backend, ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[12])
redis.call('HSET', k.owners, ARGV[7], ms(now + tonumber(ARGV[8])))
purge(k.leases, k.tags)
purge_grants()
grant_freed(backend, limit, ttl, urgent_within, ARGV[10])
if redis.call('ZCARD', k.leases) < limit then
  redis.call('ZADD', k.leases, ms(now + ttl), ARGV[4])
  if ARGV[5] ~= '-' then redis.call('HSET', k.tags, ARGV[4], string.sub(ARGV[5], 2)) end
  keep(k.leases, k.tags)
  return ARGV[4]
end
redis.call('ZADD', k.queue, ms(now + tonumber(ARGV[9])), ARGV[6])
redis.call('HSET', k.tickets, ARGV[6], ARGV[7] .. '\\n' .. ARGV[5] .. '\\n' .. ARGV[11])
return false
`;

/** Removes a ticket. ARGV: ticket id. Returns {lease id, tag} when it had been granted and not taken. */
export const WITHDRAW = `${QUEUE_PRELUDE}
local id = ARGV[1]
if redis.call('ZREM', k.queue, id) == 1 then
  redis.call('HDEL', k.tickets, id)
  return false
end
local grant = redis.call('HGET', k.grants, id)
if not grant then return false end
redis.call('HDEL', k.grants, id)
redis.call('ZREM', k.grant_expiry, id)
local lease, _, tag = unpack(split(grant))
return {lease, tag}
`;

/**
 * Keeps the owner alive, forgets owners that are not, drops what expired, grants freed slots, and
 * takes the owner's grants. ARGV: backend, owner, owner ttlMs, grant channel prefix, then the ids
 * of the tickets the owner waits for. Returns {{ticket id, lease id, tag, …}, {ticket ids neither
 * queued nor granted}}.
 */
export const TAKE_GRANTS = `${QUEUE_PRELUDE}
local backend, owner = ARGV[1], ARGV[2]
redis.call('HSET', k.owners, owner, ms(now + tonumber(ARGV[3])))
local owners = redis.call('HGETALL', k.owners)
for i = 1, #owners, 2 do
  if tonumber(owners[i + 1]) <= now then redis.call('HDEL', k.owners, owners[i]) end
end
purge(k.leases, k.tags)
purge_grants()
grant_under_known_limit(backend, ARGV[4])
local missing = {}
for i = 5, #ARGV do
  if not redis.call('ZSCORE', k.queue, ARGV[i]) and redis.call('HEXISTS', k.grants, ARGV[i]) == 0 then
    missing[#missing + 1] = ARGV[i]
  end
end
local taken = {}
local grants = redis.call('HGETALL', k.grants)
for i = 1, #grants, 2 do
  local lease, grantee, tag = unpack(split(grants[i + 1]))
  if grantee == owner then
    redis.call('HDEL', k.grants, grants[i])
    redis.call('ZREM', k.grant_expiry, grants[i])
    taken[#taken + 1] = grants[i]
    taken[#taken + 1] = lease
    taken[#taken + 1] = tag
  end
end
return {taken, missing}
`;

/** Frees a lease and grants its slot to the most urgent ticket. ARGV: backend, lease id, grant channel prefix. */
export const RELEASE_AND_GRANT = `${QUEUE_PRELUDE}
redis.call('ZREM', k.leases, ARGV[2])
redis.call('HDEL', k.tags, ARGV[2])
purge(k.leases, k.tags)
grant_under_known_limit(ARGV[1], ARGV[3])
return 0
`;

/** Tickets waiting per backend. KEYS: the queue of each backend. Returns their counts in order. */
export const QUEUED = `
local out = {}
for i = 1, #KEYS do out[i] = redis.call('ZCARD', KEYS[i]) end
return out
`;

/**
 * Takes from token buckets all or none (see `StateStore.takeTokens`). KEYS: buckets (HASH key →
 * "level atMs"). ARGV: force (1/0), then per bucket key, capacity, perSecond, amount. Returns
 * {granted (1/0), retryInMs, {level…}} as strings. The hash expires a second after its emptiest
 * bucket would be full again: a missing bucket reads full, so nothing is lost when it goes.
 */
export const TAKE_TOKENS = `${PRELUDE}
local force = ARGV[1] == '1'
local n = (#ARGV - 1) / 4
local levels, wait = {}, 0
for i = 1, n do
  local b = 2 + (i - 1) * 4
  local capacity, rate, amount = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local level = capacity
  local stored = redis.call('HGET', KEYS[1], ARGV[b])
  if stored then
    local sep = string.find(stored, ' ', 1, true)
    local at = tonumber(string.sub(stored, sep + 1))
    level = math.min(capacity, tonumber(string.sub(stored, 1, sep - 1)) + math.max(0, now - at) * rate / 1000)
  end
  levels[i] = level
  local short = math.min(amount, capacity) - level
  if short > 0 then wait = math.max(wait, short * 1000 / rate) end
end
local out = {}
if wait > 0 and not force then
  for i = 1, n do out[i] = exact(levels[i]) end
  return {0, exact(wait), out}
end
local longest = 0
for i = 1, n do
  local b = 2 + (i - 1) * 4
  local capacity, rate, amount = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local level = math.max(-capacity, math.min(capacity, levels[i] - amount))
  redis.call('HSET', KEYS[1], ARGV[b], exact(level) .. ' ' .. ms(now))
  longest = math.max(longest, (capacity - level) * 1000 / rate)
  out[i] = exact(level)
end
local ttl = math.ceil(longest) + 1000
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return {1, '0', out}
`;

/** Every script, by the command name it is defined under; `undefined` keys: given per call. */
const COMMANDS = {
  freeshTryAcquire: { lua: TRY_ACQUIRE, numberOfKeys: 2 },
  freeshRenew: { lua: RENEW, numberOfKeys: 2 },
  freeshSnapshot: { lua: SNAPSHOT, numberOfKeys: undefined },
  freeshMarkUnhealthy: { lua: MARK_UNHEALTHY, numberOfKeys: 1 },
  freeshUpdateCounters: { lua: UPDATE_COUNTERS, numberOfKeys: 1 },
  freeshAddRates: { lua: ADD_RATES, numberOfKeys: 1 },
  freeshReadRates: { lua: READ_RATES, numberOfKeys: 1 },
  freeshTryLead: { lua: TRY_LEAD, numberOfKeys: 1 },
  freeshResign: { lua: RESIGN, numberOfKeys: 1 },
  freeshPublishPlan: { lua: PUBLISH_PLAN, numberOfKeys: 2 },
  freeshPutTelemetry: { lua: PUT_TELEMETRY, numberOfKeys: 1 },
  freeshReadTelemetry: { lua: READ_TELEMETRY, numberOfKeys: 1 },
  freeshAcquireOrQueue: { lua: ACQUIRE_OR_QUEUE, numberOfKeys: 9 },
  freeshWithdraw: { lua: WITHDRAW, numberOfKeys: 9 },
  freeshTakeGrants: { lua: TAKE_GRANTS, numberOfKeys: 9 },
  freeshReleaseAndGrant: { lua: RELEASE_AND_GRANT, numberOfKeys: 9 },
  freeshQueued: { lua: QUEUED, numberOfKeys: undefined },
  freeshTakeTokens: { lua: TAKE_TOKENS, numberOfKeys: 1 },
} as const;

/** The client, with the scripts callable as commands: keys first, then arguments (a key count first where it varies). */
export type ScriptedClient = { readonly [Name in keyof typeof COMMANDS]: (...args: (string | number)[]) => Promise<unknown> };

/**
 * Defines every script on the client (ioredis runs each by EVALSHA, loading it on first use). Names
 * carry the `freesh` prefix, so they cannot clash with a user's own commands on a shared client.
 */
export function defineScripts(client: Redis | Cluster): ScriptedClient {
  for (const [name, { lua, numberOfKeys }] of Object.entries(COMMANDS)) {
    client.defineCommand(name, numberOfKeys === undefined ? { lua } : { lua, numberOfKeys });
  }
  return client as unknown as ScriptedClient;
}
