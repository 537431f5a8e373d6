//! What the driver scripts take and answer: `lua/set_position.lua`, `sweep_stale.lua`,
//! `driver_city_cas.lua`, `set_status.lua` and `delete_driver.lua`. One typed field per ARGV slot, pushed in the
//! script's order by `argv`, and each reply decoded into a type that rejects a shape the
//! script's header does not list (the slots and replies are documented in each header).

use crate::domain::{DriverId, ShiftStatus};

use super::model::ValidPosition;

/// `ARGV[2]` of `set_position.lua`: how it treats a driver (see the script's header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PositionMode {
    /// `''`: update a driver the city knows; answer `unknown` otherwise.
    Known,
    /// `create`: create the driver in the city when it is not there.
    Create,
    /// `leave`: the position lies in another city: remove the driver from this one (unless
    /// busy).
    Leave,
}

impl PositionMode {
    /// The name the script reads.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            PositionMode::Known => "",
            PositionMode::Create => "create",
            PositionMode::Leave => "leave",
        }
    }
}

/// The ARGV of one `set_position.lua` call, one field per slot.
#[derive(Debug, Clone, Copy)]
pub(super) struct SetPositionArgs<'a> {
    /// `ARGV[1]`: allowed clock skew into the future, ms.
    pub(crate) max_clock_skew_ms: u64,
    /// `ARGV[2]`.
    pub(crate) mode: PositionMode,
    /// `ARGV[3]` and `ARGV[4]`: the arrival radius (m) and dwell (ms); `None` turns arrival
    /// detection off (`''`, `''`).
    pub(crate) arrival: Option<(f64, u64)>,
    /// `ARGV[5]`: events stream MAXLEN (approximate).
    pub(crate) events_maxlen: u64,
    /// `ARGV[6]`: the city's ops channel.
    pub(crate) ops_channel: &'a str,
    /// `ARGV[7]`: the per-driver channel prefix.
    pub(crate) driver_channel_prefix: &'a str,
    /// `ARGV[8]`: the city, as named in published events.
    pub(crate) city: &'a str,
    /// `ARGV[9..]`, 9 slots per position: driver_id, lon, lat, recorded_ms, requested status
    /// (`''` keeps it), vehicle type (`''` keeps it), accuracy_m, heading_deg, speed_mps
    /// (`''` when absent).
    pub(crate) positions: &'a [(&'a DriverId, &'a ValidPosition)],
}

impl SetPositionArgs<'_> {
    /// The slots in the script's order. On the ingest hot path: one allocation for the vector
    /// and one per slot, as the script needs them as strings anyway.
    pub(super) fn argv(&self) -> Vec<String> {
        let mut args = Vec::with_capacity(8 + 9 * self.positions.len());
        args.push(self.max_clock_skew_ms.to_string());
        args.push(self.mode.as_str().to_owned());
        match self.arrival {
            Some((radius_m, dwell_ms)) => {
                args.push(radius_m.to_string());
                args.push(dwell_ms.to_string());
            }
            None => args.extend([String::new(), String::new()]),
        }
        args.push(self.events_maxlen.to_string());
        args.push(self.ops_channel.to_owned());
        args.push(self.driver_channel_prefix.to_owned());
        args.push(self.city.to_owned());
        for (id, pos) in self.positions {
            args.push(id.to_string());
            args.push(pos.point.lon.to_string());
            args.push(pos.point.lat.to_string());
            args.push(pos.recorded_ms.to_string());
            args.push(pos.status.map(|s| s.as_str()).unwrap_or("").to_owned());
            args.push(
                pos.vehicle_type
                    .map(|v| v.as_str())
                    .unwrap_or("")
                    .to_owned(),
            );
            args.push(fmt_opt(pos.accuracy_m));
            args.push(fmt_opt(pos.heading_deg));
            args.push(fmt_opt(pos.speed_mps));
        }
        args
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// The reply of `set_position.lua` for one position (3 entries of the reply), borrowing the
/// reply so that decoding allocates nothing per position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PositionReply<'r> {
    /// `'ok', packed_state, now_ms`: stored.
    Ok { state: &'r str, now_ms: i64 },
    /// `'stale', stored_recorded_ms, now_ms`: nothing written.
    Stale { stored_ms: i64, now_ms: i64 },
    /// `'future', now_ms, ''`: nothing written.
    Future { now_ms: i64 },
    /// `'unknown', '', ''`: nothing written, the driver has no state in this city.
    Unknown,
    /// `'left', packed_state, score` (mode `leave`): removed from this city; the previous
    /// state and score (none when `''`) to carry over.
    Left {
        packed: &'r str,
        score: Option<&'r str>,
    },
}

impl<'r> PositionReply<'r> {
    /// Decode the 3 reply entries of one position.
    pub(super) fn decode(entry: &'r [String]) -> anyhow::Result<Self> {
        let bad = || anyhow::anyhow!("unexpected set_position reply {entry:?}");
        // Redis' clock and stored times come back as Lua numbers turned to text.
        let num = |s: &str| -> anyhow::Result<i64> {
            s.parse::<f64>().map(|f| f as i64).map_err(|_| bad())
        };
        let [code, x, y] = entry else {
            return Err(bad());
        };
        Ok(match code.as_str() {
            "ok" => PositionReply::Ok {
                state: x,
                now_ms: num(y)?,
            },
            "stale" => PositionReply::Stale {
                stored_ms: num(x)?,
                now_ms: num(y)?,
            },
            "future" => PositionReply::Future { now_ms: num(x)? },
            "unknown" => PositionReply::Unknown,
            "left" => PositionReply::Left {
                packed: x,
                score: Some(y.as_str()).filter(|s| !s.is_empty()),
            },
            _ => return Err(bad()),
        })
    }
}

/// The ARGV of one `sweep_stale.lua` call, one field per slot.
#[derive(Debug, Clone, Copy)]
pub(super) struct SweepArgs {
    /// `ARGV[1]`: the driver TTL, ms.
    pub(crate) driver_ttl_ms: u64,
    /// `ARGV[2]`: the most drivers to drop in this call.
    pub(crate) max_drivers: usize,
    /// `ARGV[3]`: the Redis time this call may spend, µs.
    pub(crate) budget_us: u64,
    /// `ARGV[4]` (in parts per million): the share of the Redis thread sweeping may take.
    pub(crate) share: f64,
}

impl SweepArgs {
    /// The slots in the script's order.
    pub(super) fn argv(&self) -> [String; 4] {
        let ppm = (self.share * 1_000_000.0).round().clamp(1.0, 1_000_000.0) as u64;
        [
            self.driver_ttl_ms.to_string(),
            self.max_drivers.to_string(),
            self.budget_us.to_string(),
            ppm.to_string(),
        ]
    }
}

/// The reply of `sweep_stale.lua`: `{drivers dropped, buckets done, µs spent, µs to wait}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SweepReply {
    /// Drivers dropped from the city's indexes.
    pub(crate) dropped: u64,
    /// How many of the buckets passed (the first ones) were finished; the rest are for
    /// another call.
    pub(crate) buckets_done: usize,
    /// Redis time the call spent, µs, by Redis' clock (0 when the pace let it do nothing).
    pub(crate) spent_us: u64,
    /// How long no sweep call of the city may work from now, µs (the pace).
    pub(crate) wait_us: u64,
}

impl SweepReply {
    /// Decode the script's reply.
    pub(super) fn decode(reply: &[i64]) -> anyhow::Result<Self> {
        let bad = || anyhow::anyhow!("unexpected sweep_stale reply {reply:?}");
        let count = |v: i64| u64::try_from(v).map_err(|_| bad());
        match *reply {
            [dropped, done, spent, wait] => Ok(SweepReply {
                dropped: count(dropped)?,
                buckets_done: usize::try_from(done).map_err(|_| bad())?,
                spent_us: count(spent)?,
                wait_us: count(wait)?,
            }),
            _ => Err(bad()),
        }
    }
}

/// One compare-and-set of `driver_city_cas.lua` (a triple of its ARGV).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CasEntry<'a> {
    /// The driver whose directory entry is compared and set.
    pub(crate) driver_id: &'a str,
    /// `''`: no entry; `"city|ms"`: exactly that entry; `"city"`: any entry naming the city.
    pub(crate) expected: &'a str,
    /// `"city|ms"`, or `''` to remove the entry.
    pub(crate) new: &'a str,
}

/// The ARGV of one `driver_city_cas.lua` call (the KEYS are one directory bucket per entry,
/// in the same order).
#[derive(Debug, Clone, Copy)]
pub(super) struct CityCasArgs<'a> {
    /// `ARGV[3i-2..3i]`: the i-th entry's `driver_id, expected, new`.
    pub(crate) entries: &'a [CasEntry<'a>],
}

impl<'a> CityCasArgs<'a> {
    /// The slots in the script's order.
    pub(super) fn argv(&self) -> Vec<&'a str> {
        self.entries
            .iter()
            .flat_map(|e| [e.driver_id, e.expected, e.new])
            .collect()
    }
}

/// The reply of `driver_city_cas.lua`: per entry, whether it was as expected and was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CityCasReply(pub(crate) Vec<bool>);

impl CityCasReply {
    /// Decode the script's reply to a call with `entries` entries.
    pub(super) fn decode(reply: &[i64], entries: usize) -> anyhow::Result<Self> {
        let bad = || anyhow::anyhow!("unexpected driver_city_cas reply {reply:?}");
        if reply.len() != entries {
            return Err(bad());
        }
        reply
            .iter()
            .map(|&a| match a {
                1 => Ok(true),
                0 => Ok(false),
                _ => Err(bad()),
            })
            .collect::<anyhow::Result<_>>()
            .map(CityCasReply)
    }
}

/// The ARGV of one `set_status.lua` call, one field per slot.
#[derive(Debug, Clone, Copy)]
pub(super) struct SetStatusArgs<'a> {
    /// `ARGV[1]`.
    pub(crate) driver_id: &'a str,
    /// `ARGV[2]`: `available` or `offline`.
    pub(crate) status: ShiftStatus,
}

impl<'a> SetStatusArgs<'a> {
    /// The slots in the script's order.
    pub(super) fn argv(&self) -> [&'a str; 2] {
        [self.driver_id, self.status.as_str()]
    }
}

/// A reply of `set_status.lua`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SetStatusReply {
    /// `ok`: the driver's packed state now, and Redis' clock.
    Ok { state: String, now_ms: i64 },
    /// `missing`: no such driver in that city.
    Missing,
    /// `busy`: nothing written, the driver holds an order; its packed state.
    Busy { state: String },
}

impl SetStatusReply {
    /// Decode the script's reply.
    pub(super) fn decode(reply: &[String]) -> anyhow::Result<Self> {
        let bad = || anyhow::anyhow!("unexpected set_status reply {reply:?}");
        Ok(match reply {
            [code, state, now] if code == "ok" => SetStatusReply::Ok {
                state: state.clone(),
                now_ms: now
                    .parse::<i64>()
                    .or_else(|_| now.parse::<f64>().map(|n| n as i64))
                    .map_err(|_| bad())?,
            },
            [code] if code == "missing" => SetStatusReply::Missing,
            [code, state] if code == "busy" => SetStatusReply::Busy {
                state: state.clone(),
            },
            _ => return Err(bad()),
        })
    }
}

/// The ARGV of one `delete_driver.lua` call.
#[derive(Debug, Clone, Copy)]
pub(super) struct DeleteArgs<'a> {
    /// `ARGV[1]`.
    pub(crate) driver_id: &'a str,
}

impl<'a> DeleteArgs<'a> {
    /// The slots in the script's order.
    pub(super) fn argv(&self) -> [&'a str; 1] {
        [self.driver_id]
    }
}

/// A reply of `delete_driver.lua`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DeleteReply {
    /// `ok`: removed from every index of its city.
    Deleted,
    /// `missing`: no such driver in that city.
    Missing,
    /// `busy`: nothing written, the driver holds an order.
    Busy,
}

impl DeleteReply {
    /// Decode the script's reply.
    pub(super) fn decode(reply: &[String]) -> anyhow::Result<Self> {
        match reply {
            [code] if code == "ok" => Ok(DeleteReply::Deleted),
            [code] if code == "missing" => Ok(DeleteReply::Missing),
            [code] if code == "busy" => Ok(DeleteReply::Busy),
            _ => Err(anyhow::anyhow!("unexpected delete_driver reply {reply:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn position(recorded_ms: i64) -> ValidPosition {
        ValidPosition {
            point: crate::domain::GeoPoint {
                lat: 48.85,
                lon: 2.35,
            },
            recorded_ms,
            accuracy_m: None,
            heading_deg: None,
            speed_mps: None,
            vehicle_type: None,
            status: None,
        }
    }

    #[test]
    fn set_position_args_are_skew_mode_arrival_events_then_nine_slots_per_position() {
        let (d1, d2) = (
            DriverId::parse("d-1").unwrap(),
            DriverId::parse("d-2").unwrap(),
        );
        let full = ValidPosition {
            accuracy_m: Some(5.5),
            heading_deg: Some(90.0),
            speed_mps: Some(3.25),
            vehicle_type: Some(crate::domain::VehicleType::Bike),
            status: Some(ShiftStatus::Offline),
            ..position(1_700)
        };
        let bare = position(1_800);
        let args = SetPositionArgs {
            max_clock_skew_ms: 30_000,
            mode: PositionMode::Create,
            arrival: Some((50.0, 20_000)),
            events_maxlen: 1_000,
            ops_channel: "gd:events:paris",
            driver_channel_prefix: "gd:driver:",
            city: "paris",
            positions: &[(&d1, &full), (&d2, &bare)],
        };
        assert_eq!(
            args.argv(),
            [
                "30000",
                "create",
                "50",
                "20000",
                "1000",
                "gd:events:paris",
                "gd:driver:",
                "paris", //
                "d-1",
                "2.35",
                "48.85",
                "1700",
                "offline",
                "bike",
                "5.5",
                "90",
                "3.25", //
                "d-2",
                "2.35",
                "48.85",
                "1800",
                "",
                "",
                "",
                "",
                "",
            ]
        );
        for (mode, slot) in [
            (PositionMode::Known, ""),
            (PositionMode::Create, "create"),
            (PositionMode::Leave, "leave"),
        ] {
            let args = SetPositionArgs {
                max_clock_skew_ms: 0,
                mode,
                arrival: None,
                events_maxlen: 1_000,
                ops_channel: "",
                driver_channel_prefix: "",
                city: "",
                positions: &[],
            };
            assert_eq!(args.argv()[1], slot);
            assert_eq!(args.argv()[2..4], ["", ""], "no radius: detection off");
        }
    }

    #[test]
    fn each_set_position_reply_shape_decodes() {
        let cases = [
            (
                strings(&["ok", "17|1|2|A|c", "1700"]),
                PositionReply::Ok {
                    state: "17|1|2|A|c",
                    now_ms: 1_700,
                },
            ),
            (
                strings(&["stale", "1600", "1700"]),
                PositionReply::Stale {
                    stored_ms: 1_600,
                    now_ms: 1_700,
                },
            ),
            (
                strings(&["future", "1700", ""]),
                PositionReply::Future { now_ms: 1_700 },
            ),
            (strings(&["unknown", "", ""]), PositionReply::Unknown),
            (
                strings(&["left", "17|1|2|A|c", "4.5"]),
                PositionReply::Left {
                    packed: "17|1|2|A|c",
                    score: Some("4.5"),
                },
            ),
            (
                strings(&["left", "17|1|2|A|c", ""]),
                PositionReply::Left {
                    packed: "17|1|2|A|c",
                    score: None,
                },
            ),
        ];
        for (reply, want) in &cases {
            assert_eq!(PositionReply::decode(reply).unwrap(), *want);
        }
        for (bad, why) in [
            (strings(&["ok", "17|1|2|A|c"]), "two entries, not three"),
            (
                strings(&["ok", "17|1|2|A|c", "soon"]),
                "a clock that is no number",
            ),
            (
                strings(&["stale", "", "1700"]),
                "a stale reply without the stored time",
            ),
            (strings(&["moved", "", ""]), "an unknown code"),
        ] {
            let err = PositionReply::decode(&bad).expect_err(why).to_string();
            assert!(err.contains("set_position"), "{why}: {err}");
        }
    }

    #[test]
    fn sweep_args_are_the_ttl_the_driver_limit_the_budget_then_the_share_in_ppm() {
        let args = SweepArgs {
            driver_ttl_ms: 60_000,
            max_drivers: 1_000,
            budget_us: 500,
            share: 0.25,
        };
        assert_eq!(args.argv(), ["60000", "1000", "500", "250000"]);
    }

    #[test]
    fn a_sweep_reply_is_the_drivers_dropped_the_buckets_done_the_time_spent_then_the_wait() {
        assert_eq!(
            SweepReply::decode(&[12, 3, 480, 1440]).unwrap(),
            SweepReply {
                dropped: 12,
                buckets_done: 3,
                spent_us: 480,
                wait_us: 1440,
            }
        );
        for (bad, why) in [
            (&[][..], "empty"),
            (&[1, 2, 3][..], "one entry short"),
            (&[1, 2, 3, 4, 5][..], "one entry too many"),
            (&[-1, 2, 3, 4][..], "a negative count"),
            (&[1, 2, -3, 4][..], "a negative time"),
        ] {
            let err = SweepReply::decode(bad).expect_err(why).to_string();
            assert!(err.contains("sweep_stale"), "{why}: {err}");
        }
    }

    #[test]
    fn city_cas_args_are_one_triple_per_entry_in_order() {
        let entries = [
            CasEntry {
                driver_id: "d-1",
                expected: "",
                new: "paris|5",
            },
            CasEntry {
                driver_id: "d-2",
                expected: "lyon",
                new: "",
            },
        ];
        let args = CityCasArgs { entries: &entries };
        assert_eq!(args.argv(), ["d-1", "", "paris|5", "d-2", "lyon", ""]);
    }

    #[test]
    fn a_city_cas_reply_is_one_flag_per_entry() {
        assert_eq!(
            CityCasReply::decode(&[1, 0], 2).unwrap(),
            CityCasReply(vec![true, false])
        );
        for (bad, n, why) in [
            (&[1][..], 2, "fewer flags than entries"),
            (&[1, 1][..], 1, "more flags than entries"),
            (&[2][..], 1, "a flag that is neither 0 nor 1"),
        ] {
            let err = CityCasReply::decode(bad, n).expect_err(why).to_string();
            assert!(err.contains("driver_city_cas"), "{why}: {err}");
        }
    }

    #[test]
    fn set_status_args_are_the_driver_then_the_status() {
        let args = SetStatusArgs {
            driver_id: "d-1",
            status: ShiftStatus::Offline,
        };
        assert_eq!(args.argv(), ["d-1", "offline"]);
    }

    #[test]
    fn each_set_status_reply_shape_decodes() {
        assert_eq!(
            SetStatusReply::decode(&strings(&["ok", "17|1|2|A|c", "1700"])).unwrap(),
            SetStatusReply::Ok {
                state: "17|1|2|A|c".into(),
                now_ms: 1_700
            }
        );
        assert_eq!(
            SetStatusReply::decode(&strings(&["missing"])).unwrap(),
            SetStatusReply::Missing
        );
        assert_eq!(
            SetStatusReply::decode(&strings(&["busy", "17|1|2|B|c"])).unwrap(),
            SetStatusReply::Busy {
                state: "17|1|2|B|c".into()
            }
        );
        for (bad, why) in [
            (strings(&[]), "empty"),
            (strings(&["ok", "17|1|2|A|c"]), "ok without the clock"),
            (
                strings(&["ok", "17|1|2|A|c", "soon"]),
                "a clock that is no number",
            ),
            (strings(&["busy"]), "busy without the state"),
            (strings(&["gone"]), "an unknown code"),
        ] {
            let err = SetStatusReply::decode(&bad).expect_err(why).to_string();
            assert!(err.contains("set_status"), "{why}: {err}");
        }
    }

    #[test]
    fn delete_args_are_the_driver() {
        assert_eq!(DeleteArgs { driver_id: "d-1" }.argv(), ["d-1"]);
    }

    #[test]
    fn each_delete_reply_shape_decodes() {
        for (reply, want) in [
            ("ok", DeleteReply::Deleted),
            ("missing", DeleteReply::Missing),
            ("busy", DeleteReply::Busy),
        ] {
            assert_eq!(DeleteReply::decode(&strings(&[reply])).unwrap(), want);
        }
        for (bad, why) in [
            (strings(&[]), "empty"),
            (
                strings(&["ok", "extra"]),
                "a longer reply than the script sends",
            ),
            (strings(&["deleted"]), "an unknown code"),
        ] {
            let err = DeleteReply::decode(&bad).expect_err(why).to_string();
            assert!(err.contains("delete_driver"), "{why}: {err}");
        }
    }
}
