-- customer_timeline.lua — GET /v1/customers/{id}/touchpoints?limit=50, a new
-- random customer for every request.
--
--   wrk -H 'Authorization: Bearer KEY' -s bench/wrk/customer_timeline.lua URL -- FIRST_ID LAST_ID
--
-- Every generated customer holds touchpoints (bench/gen.sh spreads them
-- evenly), so every answer is a 200 with a page of the timeline.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "random_ids.lua")

function request()
   return wrk.format("GET", "/v1/customers/" .. random_id() .. "/touchpoints?limit=50")
end
