-- wrk script for the CIBA benchmarks (scripts/bench_backchannel.py, scripts/bench_pending.py).
--
--   wrk -t1 -c16 -d10s --latency -s wrk_oauth.lua URL -- MODE AUTHORIZATION ARG
--
-- MODE "body":  every request is POST with the form body ARG (a backchannel request).
-- MODE "poll":  ARG is a file with one auth_req_id per line; each request polls the token
--               endpoint for the next id of this thread's share, round-robin (thread k of n takes
--               the ids whose line number is k mod n), so every id is polled as rarely as
--               possible.
-- AUTHORIZATION is the whole Authorization header value (e.g. "Basic ...").
--
-- Every answer is counted by status and OAuth error code ("200:auth_req_id" for a backchannel
-- answer that carries an auth_req_id, "400:authorization_pending", "400:slow_down", ...), and
-- done() prints one line "WRKJSON {...}" with the totals, the latency percentiles (microseconds)
-- and those counts, which the Python side parses.

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  mode = args[1]
  local authorization = args[2]
  local arg = args[3]
  nthreads = tonumber(args[4] or "1")
  counts = {}
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.headers["Authorization"] = authorization
  if mode == "body" then
    wrk.body = arg
  elseif mode == "poll" then
    ids = {}
    local n = 0
    for line in io.lines(arg) do
      if n % nthreads == tid and #line > 0 then
        table.insert(ids, line)
      end
      n = n + 1
    end
    if #ids == 0 then
      error("no auth_req_id for thread " .. tid)
    end
    next_id = 0
    prefix = "grant_type=urn%3Aopenid%3Aparams%3Agrant-type%3Aciba&auth_req_id="
    request = function()
      next_id = next_id % #ids + 1
      return wrk.format(nil, nil, nil, prefix .. ids[next_id])
    end
  else
    error("unknown mode " .. tostring(mode))
  end
end

function response(status, headers, body)
  local code = body:match('"error"%s*:%s*"([^"]*)"')
  if code == nil then
    if body:find('"auth_req_id"', 1, true) then
      code = "auth_req_id"
    else
      code = "other"
    end
  end
  local key = status .. ":" .. code
  counts[key] = (counts[key] or 0) + 1
end

local function json_string(s)
  return '"' .. tostring(s):gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end

function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    local c = thread:get("counts")
    if c ~= nil then
      for key, value in pairs(c) do
        merged[key] = (merged[key] or 0) + value
      end
    end
  end
  local parts = {}
  for key, value in pairs(merged) do
    table.insert(parts, json_string(key) .. ":" .. value)
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},"counts":{%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    table.concat(parts, ",")))
end
