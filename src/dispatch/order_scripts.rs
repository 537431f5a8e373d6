//! What `lua/order_transition.lua` and `lua/claim_offer.lua` take and answer: one typed field
//! per ARGV slot, pushed in the script's order by `argv`, and each reply decoded into an enum
//! (the slots and replies are documented in each script's header).

use std::collections::HashMap;

use super::engine::Claim;
use super::model::{DispatchResult, OrderSpec};
use crate::domain::{DispatchPolicy, rfc3339_ms};

/// `ARGV[1]` of `order_transition.lua`: which change of the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Create,
    Accept,
    Reject,
    Pickup,
    Deliver,
    Cancel,
    Timer,
    Attempt,
    DeadLetter,
}

impl Op {
    /// The name the script reads.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Accept => "accept",
            Op::Reject => "reject",
            Op::Pickup => "pickup",
            Op::Deliver => "deliver",
            Op::Cancel => "cancel",
            Op::Timer => "timer",
            Op::Attempt => "attempt",
            Op::DeadLetter => "dead_letter",
        }
    }
}

/// `ARGV[14..23]` of `order_transition.lua`: the order a `create` stores.
pub(super) struct NewOrder<'a> {
    /// `ARGV[14..20]`.
    pub(crate) spec: &'a OrderSpec,
    /// `ARGV[21]`.
    pub(crate) policy: DispatchPolicy,
    /// `ARGV[22]`: how long before its ready time a batched order enters the pool.
    pub(crate) lookahead_ms: u64,
    /// `ARGV[23]`: how far before the creation a ready time is read as the creation.
    pub(crate) skew_ms: u64,
}

/// `ARGV[14..17]` of `order_transition.lua`: the queue entry a `dead_letter` looks at.
pub(super) struct QueueEntry<'a> {
    /// `ARGV[14]`: the dispatch queue's consumer group.
    pub(crate) group: &'a str,
    /// `ARGV[15]`: the entry's stream id.
    pub(crate) id: &'a str,
    /// `ARGV[16]`: the consumer that took the entry over.
    pub(crate) consumer: &'a str,
    /// `ARGV[17]`: deliveries without an acknowledgement after which the entry is a dead letter.
    pub(crate) max_deliveries: u32,
}

/// The ARGV of one `order_transition.lua` call, one field per slot.
pub(super) struct TransitionArgs<'a> {
    /// `ARGV[1]`.
    pub(crate) op: Op,
    /// `ARGV[2]`.
    pub(crate) order_id: &'a str,
    /// `ARGV[3]`: the order's city.
    pub(crate) city: &'a str,
    /// `ARGV[4]`, `ARGV[5]`: the answering driver and the fencing number it sent (accept,
    /// reject, pickup, deliver).
    pub(crate) answer: Option<(&'a str, u64)>,
    /// `ARGV[6]`: delay before a pending order is dispatched again.
    pub(crate) retry_ms: u64,
    /// `ARGV[7]`: dispatch attempts before a pending order fails.
    pub(crate) max_attempts: u32,
    /// `ARGV[8]`: score added per delivery.
    pub(crate) score_per_delivery: f64,
    /// `ARGV[9]`: events stream `MAXLEN ~`.
    pub(crate) events_maxlen: u64,
    /// `ARGV[10]`: the city's ops channel.
    pub(crate) ops_channel: String,
    /// `ARGV[11]`: prefix of the per-driver channels.
    pub(crate) driver_channel_prefix: String,
    /// `ARGV[12]`: the caller's lock token (attempt: must hold the lock; create: takes it).
    pub(crate) lock_token: Option<&'a str>,
    /// `ARGV[13]`: the lock's time to live (create with a lock token).
    pub(crate) lock_ttl_ms: Option<u64>,
    /// `ARGV[14]` (deliver): the score of a driver without one.
    pub(crate) unscored_score: f64,
    /// `ARGV[15]` (deliver): refuse before an arrival at the drop-off was detected
    /// (`require_arrival_for_delivery`).
    pub(crate) require_arrival: bool,
    /// `ARGV[14..23]`: the new order (create).
    pub(crate) new_order: Option<NewOrder<'a>>,
    /// `ARGV[14..17]`: the queue entry (dead_letter).
    pub(crate) queue_entry: Option<QueueEntry<'a>>,
}

impl TransitionArgs<'_> {
    /// The slots in the script's order (the create-only tail only for a create).
    pub(super) fn argv(&self) -> Vec<String> {
        let mut argv = Vec::with_capacity(19);
        argv.push(self.op.as_str().to_owned());
        argv.push(self.order_id.to_owned());
        argv.push(self.city.to_owned());
        match self.answer {
            Some((driver, fence)) => {
                argv.push(driver.to_owned());
                argv.push(fence.to_string());
            }
            None => argv.extend([String::new(), String::new()]),
        }
        argv.push(self.retry_ms.to_string());
        argv.push(self.max_attempts.to_string());
        argv.push(self.score_per_delivery.to_string());
        argv.push(self.events_maxlen.to_string());
        argv.push(self.ops_channel.clone());
        argv.push(self.driver_channel_prefix.clone());
        argv.push(self.lock_token.unwrap_or_default().to_owned());
        argv.push(self.lock_ttl_ms.map(|t| t.to_string()).unwrap_or_default());
        if self.op == Op::Deliver {
            argv.push(self.unscored_score.to_string());
            argv.push(if self.require_arrival { "1" } else { "" }.to_owned());
        }
        if let Some(entry) = &self.queue_entry {
            argv.push(entry.group.to_owned());
            argv.push(entry.id.to_owned());
            argv.push(entry.consumer.to_owned());
            argv.push(entry.max_deliveries.to_string());
        }
        if let Some(new) = &self.new_order {
            let spec = new.spec;
            argv.push(spec.pickup.lat.to_string());
            argv.push(spec.pickup.lon.to_string());
            argv.push(spec.dropoff.map(|d| d.lat.to_string()).unwrap_or_default());
            argv.push(spec.dropoff.map(|d| d.lon.to_string()).unwrap_or_default());
            argv.push(
                spec.vehicle
                    .map(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned(),
            );
            argv.push(spec.mode.as_str().to_owned());
            argv.push(spec.ready_ms.map(|t| t.to_string()).unwrap_or_default());
            argv.push(new.policy.as_str().to_owned());
            argv.push(new.lookahead_ms.to_string());
            argv.push(new.skew_ms.to_string());
        }
        argv
    }
}

/// A reply of `order_transition.lua`.
#[derive(Debug, PartialEq)]
pub(super) enum TransitionReply {
    /// `created`: the order exists; with a lock token, the lock's fencing number.
    Created { fencing: Option<u64> },
    /// `ok`: the order changed; its state now and its hash fields (none after a timer).
    Changed {
        state: String,
        order: HashMap<String, String>,
    },
    /// `same`: a driver's answer sent again (the same driver, fencing number and step as the
    /// answer that produced the order's state): nothing written; the order's hash fields.
    Repeated {
        state: String,
        order: HashMap<String, String>,
    },
    /// `missing`: no such order.
    Missing,
    /// `exists`: create found the id taken.
    Exists,
    /// `ready_early`: create was given a ready time before the creation.
    ReadyEarly,
    /// `state`: not allowed from the order's current state.
    State(String),
    /// `fence`: not the current offer's driver or fencing number.
    Fence,
    /// `expired`: accept came after the offer expired.
    Expired,
    /// `not_due`: timer found nothing due; dead_letter found the entry below its delivery limit.
    NotDue,
    /// `lock_lost`: attempt without the lock.
    LockLost,
    /// `not_held`: dead_letter found the queue entry no longer pending under the consumer.
    NotHeld,
    /// `not_arrived`: deliver before the driver's arrival at the drop-off was detected (with
    /// `require_arrival_for_delivery`).
    NotArrived,
}

impl TransitionReply {
    /// Decode the script's reply.
    pub(super) fn decode(reply: &[String]) -> anyhow::Result<Self> {
        let bad = || anyhow::anyhow!("unexpected order_transition reply {reply:?}");
        let at = |i: usize| reply.get(i).ok_or_else(bad);
        Ok(match at(0)?.as_str() {
            "created" => TransitionReply::Created {
                fencing: reply.get(2).map(|f| f.parse()).transpose()?,
            },
            "ok" => TransitionReply::Changed {
                state: at(1)?.clone(),
                order: fields(&reply[3.min(reply.len())..]),
            },
            "same" => TransitionReply::Repeated {
                state: at(1)?.clone(),
                order: fields(&reply[3.min(reply.len())..]),
            },
            "missing" => TransitionReply::Missing,
            "exists" => TransitionReply::Exists,
            "ready_early" => TransitionReply::ReadyEarly,
            "state" => TransitionReply::State(at(1)?.clone()),
            "fence" => TransitionReply::Fence,
            "expired" => TransitionReply::Expired,
            "not_due" => TransitionReply::NotDue,
            "lock_lost" => TransitionReply::LockLost,
            "not_held" => TransitionReply::NotHeld,
            "not_arrived" => TransitionReply::NotArrived,
            _ => return Err(bad()),
        })
    }
}

/// `field, value, …` as a map.
fn fields(flat: &[String]) -> HashMap<String, String> {
    flat.chunks_exact(2)
        .map(|kv| (kv[0].clone(), kv[1].clone()))
        .collect()
}

/// The ARGV of one `claim_offer.lua` call, one field per slot.
pub(super) struct ClaimArgs<'a> {
    /// `ARGV[1]`: the lease's lock token.
    pub(crate) token: &'a str,
    /// `ARGV[2]`: the lease's fencing number.
    pub(crate) fencing: u64,
    /// `ARGV[3]`: how long a position keeps a driver fresh.
    pub(crate) driver_ttl_ms: u64,
    /// `ARGV[4]`: how long an offer waits for its answer.
    pub(crate) offer_ttl_ms: u64,
    /// `ARGV[5]`: events stream `MAXLEN ~`.
    pub(crate) events_maxlen: u64,
    /// `ARGV[6]`: the city's ops channel.
    pub(crate) ops_channel: String,
    /// `ARGV[7]`: prefix of the per-driver channels.
    pub(crate) driver_channel_prefix: String,
    /// `ARGV[8]`: keep the lock when no driver was found (the caller counts the attempt under
    /// it); otherwise the script releases it.
    pub(crate) keep_lock_on_none: bool,
    /// `ARGV[9]`: ranking points per km.
    pub(crate) distance_weight: f64,
    /// `ARGV[10]`: ranking points per score point.
    pub(crate) score_weight: f64,
    /// `ARGV[11]`: the score of a driver without one (`ranking_unscored_score`).
    pub(crate) unscored_score: f64,
    /// `ARGV[12..]`: the candidates, `(driver_id, distance_m)`.
    pub(crate) candidates: &'a [(String, f64)],
}

impl ClaimArgs<'_> {
    /// The slots in the script's order.
    pub(super) fn argv(&self) -> Vec<String> {
        let mut argv = Vec::with_capacity(11 + 2 * self.candidates.len());
        argv.push(self.token.to_owned());
        argv.push(self.fencing.to_string());
        argv.push(self.driver_ttl_ms.to_string());
        argv.push(self.offer_ttl_ms.to_string());
        argv.push(self.events_maxlen.to_string());
        argv.push(self.ops_channel.clone());
        argv.push(self.driver_channel_prefix.clone());
        argv.push(if self.keep_lock_on_none { "1" } else { "0" }.to_owned());
        argv.push(self.distance_weight.to_string());
        argv.push(self.score_weight.to_string());
        argv.push(self.unscored_score.to_string());
        for (id, distance) in self.candidates {
            argv.push(id.clone());
            argv.push(distance.to_string());
        }
        argv
    }
}

/// Decode a reply of `claim_offer.lua` for `order` claimed with `fencing`.
pub(super) fn decode_claim(reply: &[String], order: &str, fencing: u64) -> anyhow::Result<Claim> {
    let bad = || anyhow::anyhow!("unexpected claim_offer reply {reply:?}");
    let text = |i: usize| reply.get(i).ok_or_else(bad);
    let num = |i: usize| -> anyhow::Result<f64> { text(i)?.parse::<f64>().map_err(|_| bad()) };
    Ok(match text(0)?.as_str() {
        "offered" => Claim::Offered(DispatchResult {
            order_id: order.to_owned(),
            driver_id: text(1)?.clone(),
            fencing_token: fencing,
            distance_m: num(2)?,
            driver_score: num(3)?,
            composite: num(4)?,
            offer_expires_at: rfc3339_ms(num(5)? as i64),
        }),
        "none" => Claim::NoDriver,
        "lock_lost" => Claim::LockLost,
        "stale_fence" => Claim::StaleFence,
        "not_pending" => Claim::NotPending(text(1)?.clone()),
        "missing" => Claim::Missing,
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::DispatchMode;
    use crate::domain::{GeoPoint, VehicleType};

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn args(op: Op) -> TransitionArgs<'static> {
        TransitionArgs {
            op,
            order_id: "o-1",
            city: "paris",
            answer: None,
            retry_ms: 5000,
            max_attempts: 10,
            score_per_delivery: 0.01,
            events_maxlen: 1000,
            ops_channel: "gd:events:paris".to_owned(),
            driver_channel_prefix: "gd:driver:".to_owned(),
            lock_token: None,
            lock_ttl_ms: None,
            unscored_score: 4.25,
            require_arrival: true,
            new_order: None,
            queue_entry: None,
        }
    }

    #[test]
    fn transition_args_fill_the_scripts_slots_in_order() {
        let mut answer = args(Op::Deliver);
        answer.answer = Some(("drv-1", 42));
        assert_eq!(
            answer.argv(),
            strings(&[
                "deliver",
                "o-1",
                "paris",
                "drv-1",
                "42",
                "5000",
                "10",
                "0.01",
                "1000",
                "gd:events:paris",
                "gd:driver:",
                "",
                "",
                "4.25",
                "1"
            ])
        );
        let mut create = args(Op::Create);
        create.lock_token = Some("tok");
        create.lock_ttl_ms = Some(3000);
        let spec = OrderSpec {
            vehicle: Some(VehicleType::Van),
            ready_ms: Some(1_700_000_000_000),
            ..OrderSpec::at(
                GeoPoint {
                    lat: 48.5,
                    lon: 2.25,
                },
                DispatchMode::Now,
            )
        };
        create.new_order = Some(NewOrder {
            spec: &spec,
            policy: DispatchPolicy::Batched,
            lookahead_ms: 600_000,
            skew_ms: 30_000,
        });
        let argv = create.argv();
        assert_eq!(argv.len(), 23);
        let mut dead = args(Op::DeadLetter);
        dead.queue_entry = Some(QueueEntry {
            group: "dispatchers",
            id: "1700000000000-3",
            consumer: "i1-w0",
            max_deliveries: 5,
        });
        let dead = dead.argv();
        assert_eq!(dead[0], "dead_letter");
        assert_eq!(dead.len(), 17);
        assert_eq!(dead[13..], ["dispatchers", "1700000000000-3", "i1-w0", "5"]);
        assert_eq!(argv[3..5], ["", ""]);
        assert_eq!(
            argv[11..],
            [
                "tok",
                "3000",
                "48.5",
                "2.25",
                "",
                "",
                "van",
                "now",
                "1700000000000",
                "batched",
                "600000",
                "30000"
            ]
        );
    }

    #[test]
    fn transition_replies_decode_into_their_variants_and_garbage_is_an_error() {
        let order = TransitionReply::decode(&strings(&[
            "ok", "accepted", "17", "state", "accepted", "driver", "d",
        ]))
        .unwrap();
        let TransitionReply::Changed { state, order } = order else {
            panic!("{order:?}");
        };
        assert_eq!(state, "accepted");
        assert_eq!(order["driver"], "d");
        assert_eq!(
            TransitionReply::decode(&strings(&["created", "17", "9"])).unwrap(),
            TransitionReply::Created { fencing: Some(9) }
        );
        assert_eq!(
            TransitionReply::decode(&strings(&["created", "17"])).unwrap(),
            TransitionReply::Created { fencing: None }
        );
        assert_eq!(
            TransitionReply::decode(&strings(&["same", "delivered", "17", "id", "o-1"])).unwrap(),
            TransitionReply::Repeated {
                state: "delivered".to_owned(),
                order: HashMap::from([("id".to_owned(), "o-1".to_owned())]),
            }
        );
        assert_eq!(
            TransitionReply::decode(&strings(&["state", "delivered"])).unwrap(),
            TransitionReply::State("delivered".to_owned())
        );
        assert_eq!(
            TransitionReply::decode(&strings(&["not_held"])).unwrap(),
            TransitionReply::NotHeld
        );
        for bad in [
            &[][..],
            &["state"][..],
            &["what"][..],
            &["created", "1", "x"][..],
        ] {
            assert!(TransitionReply::decode(&strings(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn claim_args_end_with_the_candidates_and_replies_decode() {
        let candidates = vec![("a".to_owned(), 12.5), ("b".to_owned(), 80.0)];
        let argv = ClaimArgs {
            token: "tok",
            fencing: 7,
            driver_ttl_ms: 60_000,
            offer_ttl_ms: 20_000,
            events_maxlen: 1000,
            ops_channel: "ops".to_owned(),
            driver_channel_prefix: "drv:".to_owned(),
            keep_lock_on_none: true,
            distance_weight: 1.0,
            score_weight: 2.5,
            unscored_score: 4.25,
            candidates: &candidates,
        }
        .argv();
        assert_eq!(
            argv,
            strings(&[
                "tok", "7", "60000", "20000", "1000", "ops", "drv:", "1", "1", "2.5", "4.25", "a",
                "12.5", "b", "80"
            ])
        );
        let offered = decode_claim(
            &strings(&["offered", "a", "12.5", "4", "3.9875", "1700000000000", "1"]),
            "o-1",
            7,
        )
        .unwrap();
        let Claim::Offered(r) = offered else {
            panic!("{offered:?}");
        };
        assert_eq!((r.driver_id.as_str(), r.fencing_token), ("a", 7));
        assert_eq!(r.distance_m, 12.5);
        assert_eq!(
            decode_claim(&strings(&["not_pending", "cancelled"]), "o-1", 7).unwrap(),
            Claim::NotPending("cancelled".to_owned())
        );
        assert!(decode_claim(&strings(&["offered", "a", "far"]), "o-1", 7).is_err());
    }
}
