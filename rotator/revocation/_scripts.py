"""The store's writes, as Lua scripts Redis runs atomically: each record written together
with its entry in the prefix's change log (a Redis stream), so a replica never misses a
write it could have seen, and one that was away resumes from the last entry it applied.

Every script takes KEYS record, channel, log (and the bump its high-water mark) and ARGV
suffix, retention (seconds the log keeps an entry), then its own fields. The change also
goes out on the channel (pub/sub) for replicas of versions that followed it instead.
"""

from __future__ import annotations

__all__ = ["DENY", "CUTOFF", "BUMP"]

# Appends "<suffix>\n<value>" to the log, trimming entries older than the retention (by the
# server's clock: a stream id is the server's time in milliseconds), and announces it.
_NOTE = """
local function note(value)
  local change = ARGV[1] .. '\\n' .. value
  local t = redis.call('TIME')
  local oldest = (tonumber(t[1]) - tonumber(ARGV[2])) * 1000
  redis.call('XADD', KEYS[3], 'MINID', '~', string.format('%d', oldest), '*', 'r', change)
  redis.call('PUBLISH', KEYS[2], change)
  return value
end
"""

# ARGV: suffix, retention, exp, expires_at. Keeps the later exp of two denials.
DENY = _NOTE + """
local old = redis.call('GET', KEYS[1])
if old then
  local e, x = string.match(old, '^(%d+) (%d+)$')
  if e and tonumber(e) >= tonumber(ARGV[3]) then return old end
end
local value = ARGV[3] .. ' ' .. ARGV[4]
redis.call('SET', KEYS[1], value, 'EXAT', ARGV[4])
return note(value)
"""

# ARGV: suffix, retention, revoked_at, not_before, expires_at. Merges with a cutoff already in
# force: the later of each time wins, so a second revocation never shortens a ban.
CUTOFF = _NOTE + """
local r, n, x = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local old = redis.call('GET', KEYS[1])
if old then
  local r0, n0, x0 = string.match(old, '^(%d+) (%d+) (%d+)$')
  if r0 then
    r = math.max(r, tonumber(r0)); n = math.max(n, tonumber(n0)); x = math.max(x, tonumber(x0))
  end
end
local value = string.format('%d %d %d', r, n, x)
redis.call('SET', KEYS[1], value, 'EXAT', x)
return note(value)
"""

# KEYS[4]: the high-water mark. ARGV: suffix, retention, lifetime (seconds the record lives
# after the bump). The version is the server's clock in milliseconds, or one more than the
# highest version this prefix ever issued if that is larger: versions never repeat, even after
# a subject's record expired and it is bumped again. The mark is one key, without expiry.
BUMP = _NOTE + """
local t = redis.call('TIME')
local now = tonumber(t[1])
local v = now * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('GET', KEYS[4]) or '0')
if last and last >= 9007199254740991 then
  return redis.error_reply('session version counter exhausted (2^53): versions would repeat')
end
if last and last >= v then v = last + 1 end
redis.call('SET', KEYS[4], string.format('%d', v))
local value = string.format('%d %d %d', v, now, now + tonumber(ARGV[3]))
redis.call('SET', KEYS[1], value, 'EXAT', now + tonumber(ARGV[3]))
return note(value)
"""
