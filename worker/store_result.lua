-- Store a task's state unless it already succeeded, and announce it: one round trip where Celery's
-- Redis backend makes two (a GET to check, then MULTI SETEX PUBLISH EXEC), and the check and the
-- write can no longer be split by another worker's write in between.
--
-- KEYS[1]  the task's meta key (celery-task-meta-<id>, with any global key prefix)
-- ARGV[1]  the encoded meta (JSON: brokerstack accepts nothing else)
-- ARGV[2]  seconds to keep it; 0 keeps it until deleted
-- Returns 1 when stored, 0 when the task had already succeeded (the late write is dropped, as
-- Celery drops it: a redelivered duplicate must not turn SUCCESS back into STARTED).
local current = redis.call('GET', KEYS[1])
if current then
  local decoded, meta = pcall(cjson.decode, current)
  if decoded and type(meta) == 'table' and meta['status'] == 'SUCCESS' then
    return 0
  end
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SETEX', KEYS[1], ttl, ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
-- Celery's result consumer (AsyncResult.get() on a Redis backend) waits on this channel.
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
