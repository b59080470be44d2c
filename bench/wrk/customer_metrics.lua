-- customer_metrics.lua — GET /v1/customers/{id}/metrics, a new random
-- customer for every request.
--
--   wrk -H 'Authorization: Bearer KEY' -s bench/wrk/customer_metrics.lua URL -- FIRST_ID LAST_ID
--
-- Every generated customer is active, so every answer is a 200 with the
-- customer's metrics (with null figures for one no recompute has covered;
-- the runner recomputes first when none has run on the data).

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "random_ids.lua")

function request()
   return wrk.format("GET", "/v1/customers/" .. random_id() .. "/metrics")
end
