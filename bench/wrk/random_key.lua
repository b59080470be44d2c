-- random_key.lua — GET /v1/api-keys/{id}, a new random id for every request.
--
--   wrk -H 'Authorization: Bearer KEY' -s bench/wrk/random_key.lua URL -- FIRST_ID LAST_ID
--
-- FIRST_ID..LAST_ID are the generated keys' ids. The Authorization header
-- comes from -H: wrk.format() adds the command line's headers to every request.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "random_ids.lua")

function request()
   return wrk.format("GET", "/v1/api-keys/" .. random_id())
end
