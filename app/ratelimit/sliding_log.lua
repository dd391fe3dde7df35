-- One atomic rate-limit check: a sliding log of request times in a sorted set.
-- KEYS[1] bucket; ARGV[1] limit; ARGV[2] window seconds; ARGV[3] unique member for this request.
-- Time comes from the Redis server, so application clocks may disagree.
local limit = tonumber(ARGV[1])
local window_us = tonumber(ARGV[2]) * 1000000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window_us)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  count = count + 1
  allowed = 1
end
-- Every key carries a TTL: it disappears one window after its newest request.
redis.call('PEXPIRE', KEYS[1], math.ceil(window_us / 1000) + 1000)

local reset_us = window_us
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] then
  reset_us = tonumber(oldest[2]) + window_us - now
end
return {allowed, limit - count, reset_us}
