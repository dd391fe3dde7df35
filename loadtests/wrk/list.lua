-- GET the URL as given (a page of /v1/items); only adds the JSON report.
-- wrk ... -s list.lua 'URL/v1/items?limit=50[&cursor=...]'
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = dir .. "?.lua;" .. package.path
local workload = require("workload")
setup, done = workload.setup, workload.done
