-- wrk script of bench/http.py: POST one JSON body, stop each thread after a
-- number of responses, count every answer that is not 200, and print the
-- run as one line of JSON.
--
--   wrk -t1 -c16 -d3s -s bench/http_post.lua URL -- BODY MAX_PER_THREAD

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.body = args[1]
  wrk.headers["Content-Type"] = "application/json"
  max_responses = tonumber(args[2])
  responses = 0
  not_200 = 0
end

function response(status, headers, body)
  responses = responses + 1
  if status ~= 200 then
    not_200 = not_200 + 1
  end
  if responses >= max_responses then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("not_200")
  end
  local e = summary.errors
  io.write(string.format(
    '\nWRK_JSON {"requests":%d,"duration_us":%d,"not_200":%d,"connect":%d,'
      .. '"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, bad, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99)))
end
