-- GET /records?country=NAME&limit=50&order=date: a random country's first page by date.
--   wrk -s bench/wrk/list_records.lua URL -- NAMES_FILE   (URL-encoded names, one per line)
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local names

function init(args)
   seed_random()
   names = read_lines(args[1])
end

function request()
   local name = names[math.random(#names)]
   return wrk.format("GET", "/records?country=" .. name .. "&limit=50&order=date")
end
