//! The Lua scripts the shared engine runs in Redis (each runs atomically there).

/// What every script that writes a count starts with: counts stop at 2^53 − 1
/// (`MAX_COUNT`) and are written with all their digits (a Lua number passed to Redis as
/// it is would be written in `%.14g`, losing digits past the 14th).
pub(super) const COUNTS: &str = r#"
local MAX = 9007199254740991
local function int(v) return string.format('%.0f', v) end
local function grow(v, n) return math.min(v + n, MAX) end
"#;

/// Checks every limit and commits all or none. KEYS: one per check. ARGV[1] = now (ms);
/// then 7 per check: kind (`r` sliding log, `c` counter), limit (-1 = none), hard (1/0),
/// cost, floor (a counter's value when its key is missing), expire-at (Unix s, 0 = never)
/// and the rate window's length (ms). Returns the index (1-based) of a refusing check or 0,
/// then per check: current, reset (ms) and retry (ms) (-1 where the caller knows them).
/// Counts saturate at `MAX`.
pub(super) const ADMIT: &str = r#"
local now = tonumber(ARGV[1])
local n = #KEYS
local out = {0}
local refuse, refuse_retry = 0, -1
local logs = {}
for i = 1, n do
  local b = 1 + (i - 1) * 7
  local kind, limit, hard = ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3] == '1'
  local cost, floor, len = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), tonumber(ARGV[b + 7])
  local cur, reset, retry = 0, -1, -1
  if kind == 'r' then
    local g = math.max(math.floor(len / 100), 1)
    local h = redis.call('HGETALL', KEYS[i])
    local buckets = {}
    for j = 1, #h, 2 do
      local bk, c = tonumber(h[j]), tonumber(h[j + 1])
      if (bk + 1) * g <= now - len then
        redis.call('HDEL', KEYS[i], h[j])
      else
        cur = cur + c
        buckets[#buckets + 1] = {bk, c}
      end
    end
    table.sort(buckets, function(x, y) return x[1] < y[1] end)
    logs[i] = g
    reset = len
    if #buckets > 0 then reset = math.max((buckets[1][1] + 1) * g + len - now, 1) end
    retry = len
    if limit >= 0 and cost <= limit then
      local s = cur
      for _, bc in ipairs(buckets) do
        s = s - bc[2]
        if s + cost <= limit then
          retry = math.max((bc[1] + 1) * g + len - now, 1)
          break
        end
      end
    end
    if hard and limit >= 0 and cur + cost > limit and retry > refuse_retry then
      refuse, refuse_retry = i, retry
    end
  else
    local v = redis.call('GET', KEYS[i])
    if v then cur = tonumber(v) else cur = floor end
    if hard and limit >= 0 and cur + cost > limit and refuse == 0 then refuse = i end
  end
  out[#out + 1] = math.min(cur, MAX)
  out[#out + 1] = reset
  out[#out + 1] = retry
end
if refuse > 0 then
  out[1] = refuse
  return out
end
for i = 1, n do
  local b = 1 + (i - 1) * 7
  local cost, floor, exp, len = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6]), tonumber(ARGV[b + 7])
  if logs[i] then
    local field = int(math.floor(now / logs[i]))
    local c = tonumber(redis.call('HGET', KEYS[i], field) or '0')
    redis.call('HSET', KEYS[i], field, int(grow(c, cost)))
    redis.call('PEXPIRE', KEYS[i], len * 2)
  else
    local v = redis.call('GET', KEYS[i])
    local cur = floor
    if v then cur = tonumber(v) end
    redis.call('SET', KEYS[i], int(grow(cur, cost)))
    if exp > 0 then redis.call('EXPIREAT', KEYS[i], exp) end
  end
end
return out
"#;

/// Takes back a reservation's counts where they still are. KEYS: its counters and logs;
/// ARGV per key: kind (`r`/`c`), cost, and the log's bucket (empty for counters).
pub(super) const TAKE_BACK: &str = r#"
for i = 1, #KEYS do
  local b = (i - 1) * 3
  local kind, cost, field = ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3]
  local v
  if kind == 'r' then v = redis.call('HGET', KEYS[i], field) else v = redis.call('GET', KEYS[i]) end
  if v then
    local left = int(math.max(tonumber(v) - cost, 0))
    if kind == 'r' then
      redis.call('HSET', KEYS[i], field, left)
    else
      redis.call('SET', KEYS[i], left, 'KEEPTTL')
    end
  end
end
return #KEYS
"#;

/// Takes a lease. KEYS[1] = the resource's lease set, KEYS[2] = lease → resource hash.
/// ARGV: now (ms), ttl (ms), limit (-1 = none), hard, lease id, resource.
/// Returns {1, held} or {0, held, ms until the first lease expires}.
pub(super) const ACQUIRE: &str = r#"
local now, ttl, limit, hard = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  redis.call('HDEL', KEYS[2], unpack(gone))
end
local held = redis.call('ZCARD', KEYS[1])
if hard and limit >= 0 and held + 1 > limit then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, held, tonumber(first[2]) - now}
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[5])
redis.call('HSET', KEYS[2], ARGV[5], ARGV[6])
return {1, held + 1}
"#;

/// Releases a lease. KEYS[1] = lease → resource hash; ARGV: now (ms), lease id, the
/// lease-set key prefix. Returns 1 if the lease was held.
pub(super) const RELEASE: &str = r#"
local r = redis.call('HGET', KEYS[1], ARGV[2])
if not r then return 0 end
redis.call('HDEL', KEYS[1], ARGV[2])
local set = ARGV[3] .. r
local exp = redis.call('ZSCORE', set, ARGV[2])
redis.call('ZREM', set, ARGV[2])
if exp and tonumber(exp) > tonumber(ARGV[1]) then return 1 end
return 0
"#;

/// Adds what a node counted during an outage. KEYS: counters; ARGV per key: floor (the
/// value when the key is missing, which already holds the outage's use), delta, expire-at.
pub(super) const RECONCILE: &str = r#"
for i = 1, #KEYS do
  local b = (i - 1) * 3
  local v = redis.call('GET', KEYS[i])
  if not v then
    redis.call('SET', KEYS[i], ARGV[b + 1])
  else
    redis.call('SET', KEYS[i], int(grow(tonumber(v), tonumber(ARGV[b + 2]))))
  end
  local exp = tonumber(ARGV[b + 3])
  if exp > 0 then redis.call('EXPIREAT', KEYS[i], exp) end
end
return #KEYS
"#;
