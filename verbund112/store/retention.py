"""Per-entry retention in Redis, in Lua so that each write is one atomic step.

A key that collects entries (an AML trail, the calls of a number, the callback
list) must not keep an old entry alive because newer ones keep coming: every
write drops the entries older than the key's maximum age, and the key's expiry
is set to the *oldest* remaining entry's deadline (its creation time plus the
maximum age), never later. So no entry outlives its own deadline, whatever is
appended after it. The clock is Redis's own (TIME): one clock for both sites,
and a creation time in the future is taken as now.
"""

from __future__ import annotations

# Shared helpers, prepended to each script (Redis scripts cannot call each other).
_HELPERS = """
local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- a sorted set scored by creation time: add, drop what is too old (and beyond keep), expire with the oldest
local function add_scored(key, member, at, max_age, keep, now)
  redis.call('ZADD', key, at, member)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. string.format('%.6f', now - max_age))
  if keep > 0 then redis.call('ZREMRANGEBYRANK', key, 0, -keep - 1) end
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #oldest == 0 then return end
  redis.call('PEXPIREAT', key, string.format('%d', math.floor((tonumber(oldest[2]) + max_age) * 1000)))
end
"""

# KEYS[1] a sorted set; ARGV: member, created at (epoch s), max age (s), keep (0: no cap)
ADD_SCORED = (
    _HELPERS
    + """
local now = now_s()
local at = math.min(tonumber(ARGV[2]), now)
add_scored(KEYS[1], ARGV[1], at, tonumber(ARGV[3]), tonumber(ARGV[4]), now)
return 1
"""
)

# A call record, create-only (a second request for the same call id, a forged one say, changes
# nothing), and only then the call in its number's index.
# KEYS: the record, [the number's index]; ARGV: record (JSON), call id, created at (epoch s),
# max age (s), calls kept per number. Returns 1 when created, 0 when another record was there;
# the same record written again (an outbox repeating its write after a failover) is 1, unchanged.
CREATE_CALL = (
    _HELPERS
    + """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[4]) then
  if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
  return 0
end
if KEYS[2] then
  local now = now_s()
  add_scored(KEYS[2], ARGV[2], math.min(tonumber(ARGV[3]), now), tonumber(ARGV[4]), tonumber(ARGV[5]), now)
end
return 1
"""
)

# An AML trail: a list, newest first, of JSON fixes with their "received" time.
# KEYS[1] the trail; ARGV: the fix (JSON), max age (s), keep, channel, number (announced)
# The same fix written again (after a failover) is not added twice: returns 0, announces nothing.
ADD_TO_TRAIL = (
    _HELPERS
    + """
if redis.call('LPOS', KEYS[1], ARGV[1]) then return 0 end
local now = now_s()
local max_age = tonumber(ARGV[2])
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[3]) - 1)
-- the oldest entries are at the tail: drop those past their deadline (and any that do not parse)
local deadline = nil
while true do
  local tail = redis.call('LINDEX', KEYS[1], -1)
  if not tail then break end
  local ok, fix = pcall(cjson.decode, tail)
  local at = nil
  if ok and type(fix) == 'table' then
    at = type(fix['received']) == 'number' and fix['received'] or fix['time']
    at = type(at) == 'number' and at or nil
  end
  if at then
    at = math.min(at, now)
    if at + max_age > now then deadline = at + max_age break end
  end
  redis.call('RPOP', KEYS[1])
end
if deadline then
  redis.call('PEXPIREAT', KEYS[1], string.format('%d', math.floor(deadline * 1000)))
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""
)

# An abandoned call onto the callback list, exactly once, unless a dispatcher answered it.
# KEYS: seen mark, answered mark, the entry, the index
# ARGV: call id, entry (JSON), created at (epoch s), max age (s), seen mark TTL (s), channel
# Returns "added", "seen" (already listed once), "answered" or "expired".
ADD_ABANDONED_ONCE = (
    _HELPERS
    + """
local now = now_s()
local at = math.min(tonumber(ARGV[3]), now)
local max_age = tonumber(ARGV[4])
if at + max_age <= now then return 'expired' end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'answered' end
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[5]) then return 'seen' end
redis.call('SET', KEYS[3], ARGV[2], 'PXAT', string.format('%d', math.floor((at + max_age) * 1000)))
add_scored(KEYS[4], ARGV[1], at, max_age, 0, now)
redis.call('PUBLISH', ARGV[6], ARGV[1])
return 'added'
"""
)
