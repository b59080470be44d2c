-- customer_upsert.lua — PUT /v1/customers/by-external-id/salesforce/{id}:
-- the upsert of a customer that already exists, with a small merge patch.
--
--   wrk -H 'Authorization: Bearer KEY' -s bench/wrk/customer_upsert.lua URL -- FIRST_ID LAST_ID
--
-- bench/gen.sh gives customer N the external id ('salesforce',
-- '003' + N on 12 digits), so a random id in the generated customers' range
-- names a holder and every answer is a 200 (an update, never a create). The
-- patch moves the customer to the stage "loyal" and sets attributes.score:
-- with a random score nearly every request really writes (a patch that
-- changes nothing writes nothing). The key needs customers:write.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "random_ids.lua")

function request()
   -- wrk.format() takes either its own headers or wrk.headers (those of -H,
   -- the Authorization), never both: the Content-Type joins wrk.headers.
   wrk.headers["Content-Type"] = "application/merge-patch+json"
   local path = string.format("/v1/customers/by-external-id/salesforce/003%012d", random_id())
   local body = string.format('{"lifecycle_stage":"loyal","attributes":{"score":%d}}',
                              math.random(0, 1000000))
   return wrk.format("PUT", path, nil, body)
end
