-- random_ids.lua — what the random-id scripts share: the id range from the
-- command line and a per-thread random sequence. Loads report.lua too.
--
--   wrk ... -s bench/wrk/SCRIPT.lua URL -- FIRST_ID LAST_ID
--
-- A script does dofile() on this file and calls random_id() in its
-- request(); ids are drawn uniformly from FIRST_ID..LAST_ID, which the
-- runner takes from the generated rows (their ids are contiguous).

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
   assert(first and last and first <= last, "pass -- FIRST_ID LAST_ID")
   math.randomseed(os.time() * 1000 + (thread_no or 0))
end

function random_id()
   return math.random(first, last)
end
