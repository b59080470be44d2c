-- report.lua — wrk's done() hook: prints one parseable line when a run ends.
--
--   BENCH requests=N seconds=S rps=R p50_ms=X p99_ms=Y non2xx=N socket_errors=N
--
-- wrk counts latency in microseconds. non2xx counts answers that were not
-- 2xx or 3xx: a run with any of them measured something other than the route.
-- Every wrk script of the runner loads this file, or is this file.

function done(summary, latency, requests)
   local seconds = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d seconds=%.3f rps=%.1f p50_ms=%.3f p99_ms=%.3f non2xx=%d socket_errors=%d\n",
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50) / 1000, latency:percentile(99) / 1000,
      e.status, e.connect + e.read + e.write + e.timeout))
end
