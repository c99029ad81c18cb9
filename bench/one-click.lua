-- wrk script: every request is an RFC 8058 one-click POST with the next
-- distinct valid token from tokens.txt (paths /u/TOKEN, one per line).
-- Thread k of T posts tokens k, k+T, k+2T, ... so none is posted twice
-- until the file runs out.
--   wrk -t2 -c64 -d20s -s bench/one-click.lua http://127.0.0.1:8080 -- 2
local paths = {}
for line in io.lines("tokens.txt") do paths[#paths + 1] = line end

local next_id = 1
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

function init(args)
  nthreads = tonumber(args[1]) or 1
  n = 0
end

local body = "List-Unsubscribe=One-Click"
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }

function request()
  local i = id + n * nthreads
  n = n + 1
  if i > #paths then i = ((i - 1) % #paths) + 1 end
  return wrk.format("POST", paths[i], headers, body)
end

function done(summary, latency, requests)
  io.write(string.format("requests: %d, non-2xx: %d, errors: connect %d read %d write %d timeout %d\n",
    summary.requests, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout))
  for _, p in ipairs({ 50, 90, 99, 99.9 }) do
    io.write(string.format("latency p%s: %.2f ms\n", p, latency:percentile(p) / 1000))
  end
end
