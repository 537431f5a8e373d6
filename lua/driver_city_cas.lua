-- driver_city_cas.lua: compare-and-set entries of the driver -> city directory. Only the
-- caller that moved a driver's entry may create the driver in the new city (a driver is
-- created in a city only while the directory names that city), and the entry's time orders
-- moves between cities: a position older than the last move is stale.
--
-- KEYS[i] the driver directory bucket holding the i-th triple's driver: a hash driver_id ->
--         "city|recorded_ms" (recorded_ms: the position that last moved the driver between
--         cities, or created it)
-- ARGV    triples: driver_id, expected, new
--         expected: '' = no entry; "city|ms" = exactly that entry; "city" = any entry naming
--         that city
--         new: "city|ms", or '' to remove the entry
-- Returns one integer per triple: 1 when the entry was as expected and was set, else 0.
local out = {}
for i = 1, #ARGV, 3 do
  local id, expected, new = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = KEYS[(i + 2) / 3]
  local current = redis.call('HGET', key, id) or ''
  local matches
  if string.find(expected, '|', 1, true) or expected == '' then
    matches = current == expected
  else
    matches = current ~= '' and string.match(current, '^[^|]*') == expected
  end
  if matches then
    if new == '' then
      redis.call('HDEL', key, id)
    else
      redis.call('HSET', key, id, new)
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
