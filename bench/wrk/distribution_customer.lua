-- distribution_customer.lua — GET /v1/metrics/distribution?measure=predicted_value
-- with where a random customer sits (customer_id), a new one for every request.
--
--   wrk -H 'Authorization: Bearer KEY' -s bench/wrk/distribution_customer.lua URL -- FIRST_ID LAST_ID

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "random_ids.lua")

function request()
   return wrk.format("GET", "/v1/metrics/distribution?measure=predicted_value&customer_id=" .. random_id())
end
