//! What the driver scripts take and answer: `lua/sweep_stale.lua`, `driver_city_cas.lua`,
//! `set_status.lua` and `delete_driver.lua`. One typed field per ARGV slot, pushed in the
//! script's order by `argv`, and each reply decoded into a type that rejects a shape the
//! script's header does not list (the slots and replies are documented in each header).

use crate::domain::ShiftStatus;

/// The ARGV of one `sweep_stale.lua` call, one field per slot.
#[derive(Debug, Clone, Copy)]
pub(super) struct SweepArgs {
    /// `ARGV[1]`: the driver TTL, ms.
    pub driver_ttl_ms: u64,
    /// `ARGV[2]`: the most drivers to drop in this call.
    pub max_drivers: usize,
}

impl SweepArgs {
    /// The slots in the script's order.
    pub(super) fn argv(&self) -> [String; 2] {
        [self.driver_ttl_ms.to_string(), self.max_drivers.to_string()]
    }
}

/// The reply of `sweep_stale.lua`: `{drivers dropped, buckets done}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SweepReply {
    /// Drivers dropped from the city's indexes.
    pub dropped: u64,
    /// How many of the buckets passed (the first ones) were finished; the rest are for
    /// another call.
    pub buckets_done: usize,
}

impl SweepReply {
    /// Decode the script's reply.
    pub(super) fn decode(reply: &[i64]) -> anyhow::Result<Self> {
        let bad = || anyhow::anyhow!("unexpected sweep_stale reply {reply:?}");
        match *reply {
            [dropped, done] => Ok(SweepReply {
                dropped: u64::try_from(dropped).map_err(|_| bad())?,
                buckets_done: usize::try_from(done).map_err(|_| bad())?,
            }),
            _ => Err(bad()),
        }
    }
}

/// One compare-and-set of `driver_city_cas.lua` (a triple of its ARGV).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CasEntry<'a> {
    /// The driver whose directory entry is compared and set.
    pub driver_id: &'a str,
    /// `''`: no entry; `"city|ms"`: exactly that entry; `"city"`: any entry naming the city.
    pub expected: &'a str,
    /// `"city|ms"`, or `''` to remove the entry.
    pub new: &'a str,
}

/// The ARGV of one `driver_city_cas.lua` call (the KEYS are one directory bucket per entry,
/// in the same order).
#[derive(Debug, Clone, Copy)]
pub(super) struct CityCasArgs<'a> {
    /// `ARGV[3i-2..3i]`: the i-th entry's `driver_id, expected, new`.
    pub entries: &'a [CasEntry<'a>],
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
pub(super) struct CityCasReply(pub Vec<bool>);

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
    pub driver_id: &'a str,
    /// `ARGV[2]`: `available` or `offline`.
    pub status: ShiftStatus,
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
    pub driver_id: &'a str,
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

    #[test]
    fn sweep_args_are_the_ttl_then_the_driver_limit() {
        let args = SweepArgs {
            driver_ttl_ms: 60_000,
            max_drivers: 1_000,
        };
        assert_eq!(args.argv(), ["60000", "1000"]);
    }

    #[test]
    fn a_sweep_reply_is_the_drivers_dropped_then_the_buckets_done() {
        assert_eq!(
            SweepReply::decode(&[12, 3]).unwrap(),
            SweepReply {
                dropped: 12,
                buckets_done: 3
            }
        );
        for (bad, why) in [
            (&[][..], "empty"),
            (&[1][..], "one entry short"),
            (&[1, 2, 3][..], "one entry too many"),
            (&[-1, 2][..], "a negative count"),
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
