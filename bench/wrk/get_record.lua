-- GET /records/{id}: a random id of the loaded data.
--   wrk -s bench/wrk/get_record.lua URL -- IDS_FILE   (one record id per line)
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local ids

function init(args)
   seed_random()
   ids = read_lines(args[1])
end

function request()
   return wrk.format("GET", "/records/" .. ids[math.random(#ids)])
end
