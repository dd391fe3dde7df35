-- What every workload script shares: a number per thread (for unique keys), request headers
-- that keep wrk's -H headers, and, when wrk is done, one line "WRK_REPORT {json}" that bench.py
-- reads (latencies in microseconds; errors.status counts responses with status >= 400).
local workload = {}
local threads = 0

function workload.setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

-- wrk.format uses only the table it is given, so the -H headers (the API key) are copied in.
function workload.headers(extra)
  local headers = {}
  for name, value in pairs(wrk.headers) do
    headers[name] = value
  end
  for name, value in pairs(extra) do
    headers[name] = value
  end
  return headers
end

function workload.done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK_REPORT {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(90)),
    math.floor(latency:percentile(99)), math.floor(latency.max), latency.mean,
    errors.connect, errors.read, errors.write, errors.timeout, errors.status))
end

return workload
