-- wrk script for bench/api.py and bench/s3.py: replay one pre-signed request and count non-2xx
-- answers.
--
-- The request is read from the file named by $BENCH_REQUEST_FILE, written by bench/_loadgen.py:
--   line 1: method, line 2: path, then "Name: value" header lines, a blank line, the body.
-- If $BENCH_PATHS_FILE names a file (one path per line, e.g. presigned URLs for distinct keys),
-- the requests go to those paths in turn instead, with the same method, headers and body: wrk
-- thread i of $BENCH_THREADS takes every BENCH_THREADS-th path from the i-th, so no two requests
-- in flight share a path.
-- When the run ends, one line "BENCH_RESULT {json}" goes to stdout with the totals and
-- the latency percentiles (microseconds), which bench/_loadgen.py parses.

local function load_request(path)
  local file = assert(io.open(path, "rb"), "cannot open " .. tostring(path))
  local text = file:read("*a")
  file:close()
  local head, body = text:match("^(.-)\n\n(.*)$")
  assert(head, "malformed request file " .. path)
  local lines = {}
  for line in head:gmatch("[^\n]+") do
    lines[#lines + 1] = line
  end
  wrk.method = lines[1]
  wrk.path = lines[2]
  wrk.body = body
  for i = 3, #lines do
    local name, value = lines[i]:match("^([^:]+):%s*(.*)$")
    wrk.headers[name] = value
  end
end

load_request(os.getenv("BENCH_REQUEST_FILE"))

local function load_paths(path)
  local paths = {}
  for line in io.lines(path) do
    if line ~= "" then
      paths[#paths + 1] = line
    end
  end
  assert(#paths > 0, "no paths in " .. path)
  return paths
end

-- Each wrk thread has its own Lua state: count there, add up in done().
non2xx = 0
thread_index = 0
local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  threads[#threads + 1] = thread
end

if os.getenv("BENCH_PATHS_FILE") then
  local paths = load_paths(os.getenv("BENCH_PATHS_FILE"))
  local stride = tonumber(os.getenv("BENCH_THREADS") or "1")
  local next_index = nil

  function request()
    if next_index == nil or next_index > #paths then
      next_index = thread_index + 1
    end
    local path = paths[next_index]
    next_index = next_index + stride
    return wrk.format(nil, path)
  end
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "non2xx": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, bad,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
