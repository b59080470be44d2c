-- touchpoint_one.lua — POST /v1/touchpoints: one outbound marketing e-mail
-- to a random generated customer, with an event id of its own.
--
--   wrk -H 'Authorization: Bearer KEY' -s bench/wrk/touchpoint_one.lua URL -- FIRST_ID LAST_ID RUN
--
-- The same body as contact.lua's decision records when it allows one, so
-- that the two routes write the same touchpoint.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "random_ids.lua")

local run_tag
local base_init = init
function init(args)
   base_init(args)
   run_tag = args[3] or tostring(os.time())
   wrk.headers["Content-Type"] = "application/json"
end

local counter = 0
function request()
   counter = counter + 1
   local body = string.format(
      '{"customer_id":%d,"channel":"email","type":"contact","direction":"outbound",' ..
      '"purpose":"marketing","occurred_at":"%s","source":"bench-one","event_id":"%s-%d-%d"}',
      random_id(), os.date("!%Y-%m-%dT%H:%M:%SZ"), run_tag, thread_no or 0, counter)
   return wrk.format("POST", "/v1/touchpoints", nil, body)
end
