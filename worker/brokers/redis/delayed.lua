-- Move the delayed messages that are due onto their queues' lists, atomically: each message is
-- either in its delayed set or on its list, never both and never neither (Redis replicates and
-- fsyncs a script's effects as a unit). Any consumer may run it at any time; two running at once
-- cannot move a message twice, since the second finds it gone.
--
-- A delayed set (one per queue) scores each member by its due time (seconds since the epoch). A
-- member is '<n>:' .. list key .. payload, where the list key (n bytes, without the global key
-- prefix) is the list a normal publish would have pushed the message to, i.e. its priority's list:
-- the moved message is exactly where a publish at its due time would have put it, so any consumer
-- (a stock kombu one too) takes it from there.
--
-- KEYS: N delayed sets, then the N queues' doorbells, then the N queues' fallback lists (where a
--       member that is not in the layout above goes as it is, for the consumer to dead-letter).
-- ARGV[1]  now: members scored at or below it are due
-- ARGV[2]  move at most this many messages per call
-- ARGV[3]  stop once the messages moved add up to this many bytes (a script blocks Redis)
-- ARGV[4]  the global key prefix, prepended to the list keys read from members
-- ARGV[5]  the most rings a doorbell holds
-- Returns {messages moved, the earliest due time left in any of the sets as a string, or ''}:
-- an earliest time at or before now means the call stopped at a budget and more are due.

local n = #KEYS / 3
local now = ARGV[1]
local want = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local prefix = ARGV[4]
local bell_max = tonumber(ARGV[5])

local moved = 0
local bytes = 0
for i = 1, n do
  if moved >= want or bytes >= budget then break end
  local due = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', now, 'LIMIT', 0, want - moved)
  local rang = false
  for _, member in ipairs(due) do
    if bytes >= budget then break end
    redis.call('ZREM', KEYS[i], member)
    local colon = string.find(member, ':', 1, true)
    local len = colon and tonumber(string.sub(member, 1, colon - 1))
    if len and colon + len <= #member then
      redis.call('LPUSH', prefix .. string.sub(member, colon + 1, colon + len), string.sub(member, colon + len + 1))
    else
      redis.call('LPUSH', KEYS[2 * n + i], member)
    end
    rang = true
    moved = moved + 1
    bytes = bytes + #member
  end
  if rang then
    redis.call('LPUSH', KEYS[n + i], 1)
    redis.call('LTRIM', KEYS[n + i], 0, bell_max - 1)
  end
end

local earliest = ''
for i = 1, n do
  local first = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  if first[2] and (earliest == '' or tonumber(first[2]) < tonumber(earliest)) then
    earliest = first[2]
  end
end
return {moved, earliest}
