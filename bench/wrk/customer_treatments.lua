-- customer_treatments.lua — GET /v1/customers/{id}/treatments?limit=3, a new
-- random customer for every request.
--
--   wrk -H 'Authorization: Bearer KEY' -s bench/wrk/customer_treatments.lua URL -- FIRST_ID LAST_ID

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "random_ids.lua")

function request()
   return wrk.format("GET", "/v1/customers/" .. random_id() .. "/treatments?limit=3")
end
