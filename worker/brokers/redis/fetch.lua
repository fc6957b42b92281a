-- Take up to ARGV[1] messages off a queue's priority lists and record each one as unacked, in one
-- atomic step (Redis replicates and fsyncs a script's effects as a unit), so a message is always
-- either in its list or in the unacked hash.
--
-- KEYS: the unacked hash, the unacked index (sorted set), then the lists in the order to take from.
-- ARGV[1]  how many messages to take
-- ARGV[2]  now (the unacked index score, seconds since the epoch)
-- ARGV[3]  a prefix unique to this call: delivery tags are ARGV[3] .. n
-- ARGV[4]  stop taking once the messages taken add up to this many bytes (bounds how long one call
--          blocks Redis: moving a payload through Lua costs ~2 ms per 256 KB)
-- ARGV[5]  the number N of acks that could not be sent earlier (Redis was unreachable)
-- ARGV[6 .. 5+N]  those delivery tags, removed from the unacked records first
-- then one argument per list: the tail of the unacked entry for messages taken from it,
--   ',"",<queue name as JSON>]', or '' for a no-ack consumer's list (not recorded).
--
-- The payload is never decoded here: the entry is '[' .. payload .. tail, which is kombu's own
-- unacked layout [payload, exchange, routing_key] with the anonymous exchange and the queue's name,
-- so any kombu restore (ours or a stock worker's) puts it back on the queue it came from, and a
-- payload Redis' JSON decoder would reject (a lone surrogate escape) is kept like any other.
--
-- An idle consumer's fetch finds nothing: see the EXISTS below.
-- Returns 1 if it stopped at the byte budget (more may be waiting) else 0, then list key, delivery
-- tag ('' when not recorded), payload, for each message taken.

local want = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local prefix = ARGV[3]
local budget = tonumber(ARGV[4])
local acks = tonumber(ARGV[5])
for a = 6, 5 + acks do
  redis.call('ZREM', KEYS[2], ARGV[a])
  redis.call('HDEL', KEYS[1], ARGV[a])
end
local tails = 5 + acks - 2 -- ARGV[tails + i] belongs to KEYS[i], for i >= 3

-- Most fetches of an idle consumer find nothing: one EXISTS per chunk of lists answers that far
-- cheaper than an RPOP per list (ten lists per queue). Chunks keep unpack() within Lua's stack.
local waiting = 0
for first = 3, #KEYS, 1000 do
  waiting = waiting + redis.call('EXISTS', unpack(KEYS, first, math.min(first + 999, #KEYS)))
  if waiting > 0 then break end
end
if waiting == 0 then
  return {0}
end
local out = {0}
local taken = 0
local bytes = 0
for i = 3, #KEYS do
  local tail = ARGV[tails + i]
  while taken < want do
    if bytes >= budget then
      out[1] = 1
      break
    end
    local item = redis.call('RPOP', KEYS[i])
    if not item then break end
    taken = taken + 1
    bytes = bytes + #item
    local tag = ''
    if tail ~= '' then
      tag = prefix .. taken
      redis.call('HSET', KEYS[1], tag, '[' .. item .. tail)
      redis.call('ZADD', KEYS[2], now, tag)
    end
    out[#out + 1] = KEYS[i]
    out[#out + 1] = tag
    out[#out + 1] = item
  end
  if taken >= want or out[1] == 1 then break end
end
return out
