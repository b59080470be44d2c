-- random_key.lua — GET /v1/api-keys/{id}, a new random id for every request.
--
--   wrk -H 'Authorization: Bearer KEY' -s bench/wrk/random_key.lua URL -- FIRST_ID LAST_ID
--
-- The ids are drawn uniformly from FIRST_ID..LAST_ID (bench/gen.sh makes the
-- generated keys' ids contiguous). The Authorization header comes from -H:
-- wrk.format() adds the command line's headers to every request.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

-- setup() runs in the main Lua state, once per thread, before init();
-- each thread gets its own number so the threads draw different sequences.
local threads = 0
function setup(thread)
   threads = threads + 1
   thread:set("thread_no", threads)
end

local first, last
function init(args)
   first, last = tonumber(args[1]), tonumber(args[2])
   assert(first and last and first <= last, "random_key.lua: pass -- FIRST_ID LAST_ID")
   math.randomseed(os.time() * 1000 + (thread_no or 0))
end

function request()
   return wrk.format("GET", "/v1/api-keys/" .. math.random(first, last))
end
