"""The store's writes, as Lua scripts Redis runs atomically: each record written together
with its change notice on the prefix's channel, so a replica never misses a write it
could have seen."""

from __future__ import annotations

__all__ = ["DENY", "CUTOFF", "BUMP"]

# KEYS: record, channel. ARGV: suffix, exp, expires_at. Keeps the later exp of two denials.
DENY = """
local old = redis.call('GET', KEYS[1])
if old then
  local e, x = string.match(old, '^(%d+) (%d+)$')
  if e and tonumber(e) >= tonumber(ARGV[2]) then return old end
end
local value = ARGV[2] .. ' ' .. ARGV[3]
redis.call('SET', KEYS[1], value, 'EXAT', ARGV[3])
redis.call('PUBLISH', KEYS[2], ARGV[1] .. '\\n' .. value)
return value
"""

# KEYS: record, channel. ARGV: suffix, revoked_at, not_before, expires_at. Merges with a cutoff
# already in force: the later of each time wins, so a second revocation never shortens a ban.
CUTOFF = """
local r, n, x = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local old = redis.call('GET', KEYS[1])
if old then
  local r0, n0, x0 = string.match(old, '^(%d+) (%d+) (%d+)$')
  if r0 then
    r = math.max(r, tonumber(r0)); n = math.max(n, tonumber(n0)); x = math.max(x, tonumber(x0))
  end
end
local value = string.format('%d %d %d', r, n, x)
redis.call('SET', KEYS[1], value, 'EXAT', x)
redis.call('PUBLISH', KEYS[2], ARGV[1] .. '\\n' .. value)
return value
"""

# KEYS: record, channel, high-water mark. ARGV: suffix, lifetime (seconds the record lives
# after the bump). The version is the server's clock in milliseconds, or one more than the
# highest version this prefix ever issued if that is larger: versions never repeat, even after
# a subject's record expired and it is bumped again. The mark is one key, without expiry.
BUMP = """
local t = redis.call('TIME')
local now = tonumber(t[1])
local v = now * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
if last and last >= 9007199254740991 then
  return redis.error_reply('session version counter exhausted (2^53): versions would repeat')
end
if last and last >= v then v = last + 1 end
redis.call('SET', KEYS[3], string.format('%d', v))
local value = string.format('%d %d %d', v, now, now + tonumber(ARGV[2]))
redis.call('SET', KEYS[1], value, 'EXAT', now + tonumber(ARGV[2]))
redis.call('PUBLISH', KEYS[2], ARGV[1] .. '\\n' .. value)
return value
"""
