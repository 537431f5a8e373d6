-- driver_city_cas.lua: compare-and-set entries of the driver -> city directory. Only the
-- caller that moved a driver's entry may create the driver in the new city (a driver is
-- created in a city only while the directory names that city), and the entry's time orders
-- moves between cities: a position older than the last move is stale.
--
-- KEYS[1] driver directory hash: driver_id -> "city|recorded_ms" (recorded_ms: the position
--         that last moved the driver between cities, or created it)
-- ARGV    triples: driver_id, expected, new
--         expected: '' = no entry; "city|ms" = exactly that entry; "city" = any entry naming
--         that city
--         new: "city|ms", or '' to remove the entry
-- Returns one integer per triple: 1 when the entry was as expected and was set, else 0.
local out = {}
for i = 1, #ARGV, 3 do
  local id, expected, new = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local current = redis.call('HGET', KEYS[1], id) or ''
  local matches
  if string.find(expected, '|', 1, true) or expected == '' then
    matches = current == expected
  else
    matches = current ~= '' and string.match(current, '^[^|]*') == expected
  end
  if matches then
    if new == '' then
      redis.call('HDEL', KEYS[1], id)
    else
      redis.call('HSET', KEYS[1], id, new)
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
