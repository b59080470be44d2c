-- customer_get.lua — GET /v1/customers/{id}, a new random id for every request.
--
--   wrk -H 'Authorization: Bearer KEY' -s bench/wrk/customer_get.lua URL -- FIRST_ID LAST_ID
--
-- FIRST_ID..LAST_ID are the generated customers' ids; every one of them is
-- active, so every answer is a 200 with the customer.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "random_ids.lua")

function request()
   return wrk.format("GET", "/v1/customers/" .. random_id())
end
