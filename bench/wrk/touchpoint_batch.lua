-- touchpoint_batch.lua — POST /v1/touchpoints/batch with 1,000 new purchases
-- per request (each event id is new: thread, request and item numbers), for
-- random generated customers.
--
--   wrk -H 'Authorization: Bearer KEY' -s bench/wrk/touchpoint_batch.lua URL -- FIRST_ID LAST_ID RUN
--
-- RUN makes the event ids of this run unlike those of earlier runs on the
-- same database. The events/s of a run are its requests/s times 1,000.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "random_ids.lua")

local run_tag
local base_init = init
function init(args)
   base_init(args)
   run_tag = args[3] or tostring(os.time())
   -- Added to wrk.headers, which hold the -H headers (the API key): a headers
   -- table given to wrk.format would replace them.
   wrk.headers["Content-Type"] = "application/json"
end

local BATCH = 1000
local counter = 0
local parts = {}

function request()
   counter = counter + 1
   local prefix = run_tag .. "-" .. (thread_no or 0) .. "-" .. counter .. "-"
   for i = 1, BATCH do
      local cents = math.random(100, 50000)
      parts[i] = string.format(
         '{"customer_id":%d,"channel":"store","type":"purchase","direction":"inbound",' ..
         '"occurred_at":"2026-11-20T10:%02d:%02dZ","source":"bench-batch","event_id":"%s%d",' ..
         '"amount":%d.%02d,"currency":"EUR","items":[{"sku":"SKU-%d","quantity":1,' ..
         '"unit_price":%d.%02d}]}',
         random_id(), i % 60, counter % 60, prefix, i, math.floor(cents / 100), cents % 100, i % 500,
         math.floor(cents / 100), cents % 100)
   end
   local body = "[" .. table.concat(parts, ",") .. "]"
   return wrk.format("POST", "/v1/touchpoints/batch", nil, body)
end
