-- PUT /v1/items/{key} of a random seeded key (unconditional), with a value like the seeded ones.
-- wrk ... -s put.lua URL -- <item count> <key prefix>
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = dir .. "?.lua;" .. package.path
local workload = require("workload")
setup, done = workload.setup, workload.done

local count, prefix
local headers
local text = string.rep("x", 64)

function init(args)
  count = tonumber(args[1]) or 10000
  prefix = args[2] or "item."
  headers = workload.headers({ ["Content-Type"] = "application/json" })
  math.randomseed(os.time() * 100 + thread_number)
end

function request()
  local n = math.random(0, count - 1)
  local body = string.format('{"value":{"n":%d,"text":"%s"}}', n, text)
  return wrk.format("PUT", string.format("/v1/items/%s%07d", prefix, n), headers, body)
end
