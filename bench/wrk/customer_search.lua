-- customer_search.lua — POST /v1/customers/search?limit=50: the first page of
-- a win-back rule of three conditions, one a touchpoint aggregate:
--
--   wrk -H 'Authorization: Bearer KEY' -s bench/wrk/customer_search.lua URL
--
-- Italian customers (bench/gen.sh spreads the ten countries evenly, so a
-- tenth of the base) whose churn risk is 0.6 or more (1 - p_alive, from
-- customer_metrics) and who bought nothing in the last 90 days (the
-- purchases of bench/simulate.py span the two years before generation).
-- Churn risk and a recent purchase rarely go together, so the rule asks for
-- none: it matches many customers and a page fills after a short walk. The
-- metrics are those of the last recompute (measure_metrics); with none yet
-- (fresh data) no customer matches and the page walks every Italian
-- customer, which the figures then show.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

-- Added to wrk.headers, which hold the -H headers (the API key): a headers
-- table given to wrk.format would replace them.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"rule":{"all":[' ..
   '{"field":"address.country","op":"eq","value":"IT"},' ..
   '{"field":"metrics.churn_risk","op":"gte","value":0.6},' ..
   '{"touchpoints":{"type":"purchase","within_days":90},"agg":"count","op":"eq","value":0}]}}'
