//! What `lua/set_score.lua` and `lua/rank_around.lua` take and answer: one typed field per ARGV
//! slot, pushed in the script's order by `argv`, and each reply decoded into an enum (the slots
//! and replies are documented in each script's header).

/// `ARGV[2]` of `set_score.lua`: how the score is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ScoreOp {
    /// `set`: replace the score.
    Set,
    /// `gt`: only raise it (ZADD GT).
    Gt,
    /// `incr`: add to it (ZINCRBY).
    Incr,
}

impl ScoreOp {
    /// The name the script reads.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            ScoreOp::Set => "set",
            ScoreOp::Gt => "gt",
            ScoreOp::Incr => "incr",
        }
    }
}

/// The ARGV of one `set_score.lua` call after the driver id: `ARGV[1]` (the driver id) is pushed
/// by `crate::drivers::run_on_driver_city`, which takes these as its `extra_args`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct SetScoreArgs {
    /// `ARGV[2]`: set, raise or increment.
    pub(crate) op: ScoreOp,
    /// `ARGV[3]`: the score (set, gt) or the amount added (incr).
    pub(crate) value: f64,
}

impl SetScoreArgs {
    /// `ARGV[2..3]` in the script's order (`ARGV[1]` is the driver id, see above).
    pub(super) fn argv(&self) -> Vec<String> {
        vec![self.op.as_str().to_owned(), self.value.to_string()]
    }
}

/// A reply of `set_score.lua`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum SetScoreReply {
    /// `{'ok', score, changed}`: the score now and whether this call changed it.
    Ok { score: f64, changed: bool },
    /// `{'missing'}`: the driver has no state in that city; nothing written.
    Missing,
}

impl SetScoreReply {
    /// Decode the script's reply.
    pub(super) fn decode(reply: &[String]) -> anyhow::Result<Self> {
        let bad = || anyhow::anyhow!("unexpected set_score reply {reply:?}");
        let strs: Vec<&str> = reply.iter().map(String::as_str).collect();
        Ok(match strs.as_slice() {
            ["ok", score, changed] => SetScoreReply::Ok {
                score: score.parse().map_err(|_| bad())?,
                changed: match *changed {
                    "1" => true,
                    "0" => false,
                    _ => return Err(bad()),
                },
            },
            ["missing"] => SetScoreReply::Missing,
            _ => return Err(bad()),
        })
    }
}

/// The ARGV of one `rank_around.lua` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RankAroundArgs<'a> {
    /// `ARGV[1]`: the driver.
    pub(crate) driver_id: &'a str,
    /// `ARGV[2]`: how many neighbours on each side.
    pub(crate) around: u64,
}

impl RankAroundArgs<'_> {
    /// The slots in the script's order.
    pub(super) fn argv(&self) -> Vec<String> {
        vec![self.driver_id.to_owned(), self.around.to_string()]
    }
}

/// A reply of `rank_around.lua`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum RankAroundReply {
    /// `{rank0, score, first_rank0, member1, score1, …}`: the driver's 0-based rank and score,
    /// the 0-based rank of the first neighbour, and the neighbours (the driver included),
    /// highest first.
    Ranked {
        rank0: u64,
        score: f64,
        first_rank0: u64,
        neighbours: Vec<(String, f64)>,
    },
    /// `{}`: the driver has no score.
    NoScore,
}

impl RankAroundReply {
    /// Decode the script's reply.
    pub(super) fn decode(reply: &[String]) -> anyhow::Result<Self> {
        let bad = || anyhow::anyhow!("unexpected rank_around reply {reply:?}");
        let [rank0, score, first_rank0, flat @ ..] = reply else {
            return if reply.is_empty() {
                Ok(RankAroundReply::NoScore)
            } else {
                Err(bad())
            };
        };
        if flat.len() % 2 != 0 {
            return Err(bad());
        }
        let neighbours = flat
            .chunks_exact(2)
            .map(|pair| Ok((pair[0].clone(), pair[1].parse().map_err(|_| bad())?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(RankAroundReply::Ranked {
            rank0: rank0.parse().map_err(|_| bad())?,
            score: score.parse().map_err(|_| bad())?,
            first_rank0: first_rank0.parse().map_err(|_| bad())?,
            neighbours,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn set_score_args_fill_their_slots_in_order() {
        let args = |op, value| SetScoreArgs { op, value }.argv();
        assert_eq!(args(ScoreOp::Set, 4.8), ["set", "4.8"]);
        assert_eq!(args(ScoreOp::Gt, 5.0), ["gt", "5"]);
        assert_eq!(args(ScoreOp::Incr, -0.5), ["incr", "-0.5"]);
    }

    #[test]
    fn set_score_replies_decode() {
        assert_eq!(
            SetScoreReply::decode(&strings(&["ok", "4.8", "1"])).unwrap(),
            SetScoreReply::Ok {
                score: 4.8,
                changed: true
            }
        );
        assert_eq!(
            SetScoreReply::decode(&strings(&["ok", "5", "0"])).unwrap(),
            SetScoreReply::Ok {
                score: 5.0,
                changed: false
            }
        );
        assert_eq!(
            SetScoreReply::decode(&strings(&["missing"])).unwrap(),
            SetScoreReply::Missing
        );
    }

    #[test]
    fn malformed_set_score_replies_are_errors_naming_the_script() {
        for (reply, why) in [
            (strings(&[]), "empty"),
            (strings(&["ok", "4.8"]), "no changed flag"),
            (strings(&["ok", "high", "1"]), "score not a number"),
            (strings(&["ok", "4.8", "yes"]), "changed neither 1 nor 0"),
            (strings(&["done", "4.8", "1"]), "unknown status"),
        ] {
            let err = SetScoreReply::decode(&reply).unwrap_err();
            assert!(err.to_string().contains("set_score"), "{why}: {err}");
        }
    }

    #[test]
    fn rank_around_args_fill_their_slots_in_order() {
        let args = RankAroundArgs {
            driver_id: "drv-1",
            around: 5,
        };
        assert_eq!(args.argv(), ["drv-1", "5"]);
    }

    #[test]
    fn rank_around_replies_decode() {
        let reply = strings(&["3", "4.9", "2", "drv-9", "4.95", "drv-1", "4.9"]);
        assert_eq!(
            RankAroundReply::decode(&reply).unwrap(),
            RankAroundReply::Ranked {
                rank0: 3,
                score: 4.9,
                first_rank0: 2,
                neighbours: vec![("drv-9".into(), 4.95), ("drv-1".into(), 4.9)]
            }
        );
        assert_eq!(
            RankAroundReply::decode(&[]).unwrap(),
            RankAroundReply::NoScore
        );
    }

    #[test]
    fn malformed_rank_around_replies_are_errors_naming_the_script() {
        for (reply, why) in [
            (strings(&["3", "4.9"]), "too short"),
            (
                strings(&["3", "4.9", "2", "drv-9"]),
                "a neighbour without score",
            ),
            (strings(&["x", "4.9", "2"]), "rank not a number"),
            (
                strings(&["3", "4.9", "2", "drv-9", "high"]),
                "neighbour score not a number",
            ),
        ] {
            let err = RankAroundReply::decode(&reply).unwrap_err();
            assert!(err.to_string().contains("rank_around"), "{why}: {err}");
        }
    }
}
