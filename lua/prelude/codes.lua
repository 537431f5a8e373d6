-- prelude/codes.lua, joined before the scripts that read or write drivers (see
-- src/store/scripts.rs): the one definition of the driver codes and the packed state.
-- A driver's packed state (the drivers hash of its city) is
--   "recorded_ms|lat|lon|S|V|accuracy_m|heading_deg|speed_mps"
-- S its status (a available, b busy, o offline), V its vehicle (b bike, s scooter, c car, v van).
-- Its GEO member is its vehicle's tag and its id ('c:drv-1'), in the GEO set of its status.
-- Defines:
--   STATUS            status -> position of its GEO set among the three (available, busy,
--                     offline): 0, 1, 2
--   TAG               vehicle -> GEO member prefix ('b:', 's:', 'c:', 'v:')
--   unpack_state(s)   -> recorded_ms, lat, lon, status, vehicle, rest (strings; status and
--                     vehicle by name; rest is "accuracy_m|heading_deg|speed_mps"); nils when s
--                     is not a packed state
--   pack_state(recorded_ms, lat, lon, status, vehicle, ...)   the packed state; the trailing
--                     arguments are rest, or accuracy_m, heading_deg, speed_mps
--   all_tags(id)      the id under every vehicle tag (to remove it whatever its vehicle)
local STATUS = {available = 0, busy = 1, offline = 2}
local TAG = {bike = 'b:', scooter = 's:', car = 'c:', van = 'v:'}
local unpack_state, pack_state
do
  local status_code = {available = 'a', busy = 'b', offline = 'o'}
  local vehicle_code = {bike = 'b', scooter = 's', car = 'c', van = 'v'}
  local status_of = {a = 'available', b = 'busy', o = 'offline'}
  local vehicle_of = {b = 'bike', s = 'scooter', c = 'car', v = 'van'}

  function unpack_state(s)
    local rec, lat, lon, sc, vc, rest = string.match(s, '^([^|]*)|([^|]*)|([^|]*)|(%a)|(%a)|(.*)$')
    return rec, lat, lon, status_of[sc], vehicle_of[vc], rest
  end

  function pack_state(rec, lat, lon, status, vehicle, ...)
    return table.concat({rec, lat, lon, status_code[status], vehicle_code[vehicle], ...}, '|')
  end
end

local function all_tags(id)
  return TAG.bike .. id, TAG.scooter .. id, TAG.car .. id, TAG.van .. id
end
