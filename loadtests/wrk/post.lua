-- POST /v1/items with a key no request has used: <run prefix><thread>.<counter>.
-- wrk ... -s post.lua URL -- <run prefix> [idempotency]
-- With "idempotency" every request also sends a fresh Idempotency-Key (the key itself).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = dir .. "?.lua;" .. package.path
local workload = require("workload")
setup, done = workload.setup, workload.done

local prefix, idempotent
local counter = 0
local text = string.rep("x", 64)

function init(args)
  prefix = args[1] or "post."
  idempotent = args[2] == "idempotency"
end

function request()
  counter = counter + 1
  local key = string.format("%s%d.%d", prefix, thread_number, counter)
  local headers = workload.headers({ ["Content-Type"] = "application/json" })
  if idempotent then
    headers["Idempotency-Key"] = key
  end
  local body = string.format('{"key":"%s","value":{"n":%d,"text":"%s"}}', key, counter, text)
  return wrk.format("POST", "/v1/items", headers, body)
end
