-- report.lua — wrk's done() hook: prints one parseable line when a run ends.
--
--   BENCH requests=N seconds=S rps=R p50_ms=X p99_ms=Y non2xx=N socket_errors=N
--
-- wrk counts latency in microseconds. non2xx is wrk's count of answers with
-- a status of 400 or more: a run with any of them measured something other
-- than the route. Every wrk script of the runner loads this file, or is this
-- file.
--
-- With BENCH_CHECK=1 in the environment (the runner's check before it
-- measures), response() also prints each answer's status, and its body when
-- it is not a 2xx, as "CHECK status=N body=...", and stops the thread after
-- the first answer. Measurements leave it undefined: wrk parses bodies only
-- for scripts that define response().

if os.getenv("BENCH_CHECK") == "1" then
   function response(status, headers, body)
      local shown = ""
      if status < 200 or status > 299 then
         shown = (body or ""):gsub("%s+", " ")
      end
      io.write(string.format("CHECK status=%d body=%s\n", status, shown))
      wrk.thread:stop()
   end
end

function done(summary, latency, requests)
   local seconds = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d seconds=%.3f rps=%.1f p50_ms=%.3f p99_ms=%.3f non2xx=%d socket_errors=%d\n",
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50) / 1000, latency:percentile(99) / 1000,
      e.status, e.connect + e.read + e.write + e.timeout))
end
