-- wrk script: POST a fixed JSON body and print a JSON summary line at the end.
--
--   BENCH_BODY_FILE=body.json BENCH_AUTH="Bearer sk-..." wrk -t1 -c8 -d10s -s post.lua URL
--
-- The summary line starts with "BENCH_JSON " so benchmarks/run.py can find it in wrk's output.
-- Latencies are in microseconds; "non2xx" counts responses with a status >= 300.

local body_file = os.getenv("BENCH_BODY_FILE")
local auth = os.getenv("BENCH_AUTH")

local f = assert(io.open(body_file, "rb"), "cannot open BENCH_BODY_FILE")
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
if auth and auth ~= "" then
  wrk.headers["Authorization"] = auth
end

-- no request() function: wrk's init() then builds the request once, with the Host header

done = function(summary, latency, requests)
  local e = summary.errors
  local parts = {
    string.format('"requests":%d', summary.requests),
    string.format('"duration_us":%d', summary.duration),
    string.format('"bytes":%d', summary.bytes),
    string.format('"connect_errors":%d', e.connect),
    string.format('"read_errors":%d', e.read),
    string.format('"write_errors":%d', e.write),
    string.format('"non2xx":%d', e.status),
    string.format('"timeouts":%d', e.timeout),
    string.format('"lat_min_us":%d', latency.min),
    string.format('"lat_mean_us":%.1f', latency.mean),
    string.format('"lat_max_us":%d', latency.max),
    string.format('"p50_us":%d', latency:percentile(50)),
    string.format('"p90_us":%d', latency:percentile(90)),
    string.format('"p99_us":%d', latency:percentile(99)),
  }
  io.write("BENCH_JSON {" .. table.concat(parts, ",") .. "}\n")
end
