-- POST /records: never a conflict. Each thread writes to a country of its own (named after
-- the run's TAG, unique per wrk invocation, and the thread) on consecutive dates from
-- 2100-01-01; a new country name is created by the first write, as the contract says.
--   wrk -s bench/wrk/create_record.lua URL -- TAG TOKEN
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local FIRST_DAY = 4102444800 -- 2100-01-01T00:00:00Z
local day = 0
local country, headers

function init(args)
   country = "Bench " .. args[1] .. " " .. thread_index
   headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. args[2],
   }
end

function request()
   local date = os.date("!%Y-%m-%d", FIRST_DAY + day * 86400)
   day = day + 1
   local body = string.format(
      '{"country": "%s", "date": "%s", "cases": %d, "deaths": 0, "recoveries": 0}',
      country, date, day % 100000)
   return wrk.format("POST", "/records", headers, body)
end
