-- Shared by the endpoint scripts (loaded with dofile): thread numbering, exact non-2xx
-- counting, an optional request budget, and one JSON line of results for bench/run.py.
--
-- setup() and done() run in wrk's main Lua state; init(), request() and response() run in
-- each thread's own state, where `thread_index` (1, 2, ...) is set before init().

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("thread_index", #threads)
end

non2xx = 0
responses = 0
-- BENCH_REQUESTS_PER_THREAD > 0: each thread stops after that many responses and says so
-- on stdout. wrk itself still sleeps out its -d duration: bench/run.py sends it SIGINT once
-- every thread is done, and wrk then prints its summary.
budget = tonumber(os.getenv("BENCH_REQUESTS_PER_THREAD") or "0") or 0

function response(status, headers, body)
   responses = responses + 1
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
   end
   if budget > 0 and responses == budget then
      io.write("BENCH_THREAD_DONE\n")
      io.flush()
      wrk.thread:stop()
   end
end

function done(summary, latency, requests)
   local non = 0
   for _, thread in ipairs(threads) do
      non = non + (thread:get("non2xx") or 0)
   end
   local errors = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "non2xx": %d, ' ..
      '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, ' ..
      '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
      summary.requests, summary.duration, summary.bytes, non,
      errors.connect, errors.read, errors.write, errors.status, errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean))
end

-- The lines of a file, for the id and name lists bench/run.py writes.
function read_lines(path)
   local lines = {}
   for line in io.lines(path) do
      if line ~= "" then
         lines[#lines + 1] = line
      end
   end
   assert(#lines > 0, "no lines in " .. path)
   return lines
end

function seed_random()
   math.randomseed(os.time() * 1000 + (thread_index or 0) * 7919)
end
