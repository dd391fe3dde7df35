-- GET /v1/items/{key} of a random seeded key.
-- wrk ... -s get.lua URL -- <item count> <key prefix>
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = dir .. "?.lua;" .. package.path
local workload = require("workload")
setup, done = workload.setup, workload.done

local count, prefix

function init(args)
  count = tonumber(args[1]) or 10000
  prefix = args[2] or "item."
  math.randomseed(os.time() * 100 + thread_number)
end

function request()
  return wrk.format("GET", string.format("/v1/items/%s%07d", prefix, math.random(0, count - 1)))
end
