-- contact.lua — POST /v1/customers/{id}/contacts: a marketing e-mail to a
-- random generated customer who granted e-mail marketing (bench/gen.sh
-- grants it to customer N unless (N + 1) is a multiple of 3), with an event
-- id of its own. A decision refused by a cap answers 409 (counted apart).
--
--   wrk -H 'Authorization: Bearer KEY' -s bench/wrk/contact.lua URL -- FIRST_ID LAST_ID RUN

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
   local id = random_id()
   if (id + 1) % 3 == 0 then
      id = id + 1
   end
   local body = string.format(
      '{"channel":"email","purpose":"marketing","source":"bench-contact","event_id":"%s-%d-%d"}',
      run_tag, thread_no or 0, counter)
   return wrk.format("POST", "/v1/customers/" .. id .. "/contacts", nil, body)
end
