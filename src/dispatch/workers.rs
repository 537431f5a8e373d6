//! Background dispatch work of a service instance: queue workers that consume each city's
//! dispatch stream in one consumer group (so any number of instances share the work, and
//! entries of a crashed worker are taken over with XAUTOCLAIM), and the timer scan that expires
//! unanswered offers and re-queues orders that wait for a retry.
//!
//! An entry that is never acknowledged (its dispatch fails every time, or kills its worker)
//! would be taken over forever; once it was delivered `queue_max_deliveries` times, the
//! take-over moves it to the city's dead-letter stream instead and its order fails.

use crate::store::keys::DISPATCH_GROUP;
use std::sync::Arc;
use std::time::Duration;

use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};

use super::engine::{DispatchOutcome, Dispatcher};
use super::error::DispatchError;
use super::transitions::DeadLetter;

/// Create the consumer group on every city's dispatch stream (idempotent). Entries appended
/// before the group existed are read too (the group starts at id 0).
pub async fn ensure_groups(dispatcher: &Dispatcher) -> redis::RedisResult<()> {
    for city in dispatcher.cities().all() {
        ensure_group(dispatcher, city.id.as_str()).await?;
    }
    Ok(())
}

/// Create the consumer group on `city`'s dispatch stream (idempotent).
async fn ensure_group(dispatcher: &Dispatcher, city: &str) -> redis::RedisResult<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(dispatcher.store().keys().dispatch_queue(city))
        .arg(DISPATCH_GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut dispatcher.store().conn())
        .await;
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Process one queue entry; `true` when it may be acknowledged. A panic while processing is
/// caught and leaves the entry pending, like an error: the worker lives on, and an entry that
/// panics every time is dead-lettered after `queue_max_deliveries` like any poison entry.
async fn handle(dispatcher: &Dispatcher, city: &str, entry: &StreamId) -> bool {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(handle_entry(dispatcher, city, entry))
        .catch_unwind()
        .await
    {
        Ok(ack) => ack,
        Err(_) => {
            tracing::error!(city, id = %entry.id, "processing a queue entry panicked; the entry stays pending");
            false
        }
    }
}

async fn handle_entry(dispatcher: &Dispatcher, city: &str, entry: &StreamId) -> bool {
    let Some(order) = entry.get::<String>("order") else {
        tracing::warn!(city, id = %entry.id, "queue entry without an order; dropping it");
        return true;
    };
    let span = tracing::info_span!("queue", city, order = %order, entry = %entry.id);
    let dispatched =
        tracing::Instrument::instrument(dispatcher.dispatch_in(city, &order, true), span).await;
    match dispatched {
        Ok(DispatchOutcome::Offered(r)) => {
            tracing::debug!(city, order, driver = %r.driver_id, fencing = r.fencing_token, "offered");
            true
        }
        // Nobody free: the attempt is counted and the retry timer re-queues the order.
        Ok(DispatchOutcome::NoDriver) => true,
        // Another dispatch owns it now; if that one dies, the order's timer re-queues it.
        Ok(DispatchOutcome::Locked | DispatchOutcome::LockLost) => true,
        Ok(DispatchOutcome::NotPending(_)) => true,
        Err(DispatchError::OrderNotFound(_)) => true,
        Err(err) => {
            // Left unacknowledged: this or another worker takes it over after the claim idle time.
            tracing::warn!(
                city,
                order,
                error = &err as &dyn std::error::Error,
                "dispatch failed; the entry stays pending"
            );
            false
        }
    }
}

async fn ack(dispatcher: &Dispatcher, city: &str, id: &str) {
    let mut conn = dispatcher.store().conn();
    let acked: redis::RedisResult<i64> = redis::cmd("XACK")
        .arg(dispatcher.store().keys().dispatch_queue(city))
        .arg(DISPATCH_GROUP)
        .arg(id)
        .query_async(&mut conn)
        .await;
    if let Err(err) = acked {
        tracing::warn!(city, id, error = %err, "XACK failed; the entry will be handled again");
    }
}

/// Pages of `queue_claim_count` entries one take-over pass reads at most. A pass handles each
/// page before it reads the next, so without a bound a backlog (or entries going idle as fast
/// as one worker handles them) would keep the worker from new entries; the next pass resumes
/// from the cursor.
const CLAIM_PAGES_PER_PASS: usize = 8;

/// The XAUTOCLAIM cursor of a scan from the start, and of a scan that reached the end.
const CURSOR_START: &str = "0-0";

/// What one take-over pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReclaimPass {
    /// Entries taken over (each dispatched, acknowledged or dead-lettered).
    pub claimed: usize,
    /// Entries of those moved to the dead-letter stream (their orders failed).
    pub dead_lettered: usize,
    /// Pending entries found deleted from the stream (trimmed); Redis dropped them from the
    /// group, and their orders' retry timers queue them again.
    pub deleted: usize,
    /// The pass reached the end of the pending entries; `false` when it stopped after
    /// [`CLAIM_PAGES_PER_PASS`] pages and the next pass goes on from there.
    pub complete: bool,
}

/// One worker's take-over of the idle entries of one city's queue, page after page, resumed
/// across passes where the last one stopped.
pub struct Reclaimer {
    city: String,
    consumer: String,
    cursor: String,
}

impl Reclaimer {
    /// Take-overs of `city`'s idle entries by `consumer`, starting from the first entry.
    pub fn new(city: &str, consumer: &str) -> Self {
        Self {
            city: city.to_owned(),
            consumer: consumer.to_owned(),
            cursor: CURSOR_START.to_owned(),
        }
    }

    /// Take over the entries other consumers (or this one) read but left unacknowledged for
    /// `queue_claim_idle_ms`, following XAUTOCLAIM's cursor until it comes back to `0-0` or
    /// [`CLAIM_PAGES_PER_PASS`] pages were read, and handle each: dead-letter it when it was
    /// delivered `queue_max_deliveries` times, dispatch it otherwise. On an error the next pass
    /// resumes from the last page read.
    pub async fn pass(&mut self, dispatcher: &Dispatcher) -> redis::RedisResult<ReclaimPass> {
        let mut pass = ReclaimPass::default();
        for _ in 0..CLAIM_PAGES_PER_PASS {
            let page = self.claim_page(dispatcher).await?;
            self.cursor = page.next_stream_id;
            if !page.deleted_ids.is_empty() {
                pass.deleted += page.deleted_ids.len();
                tracing::warn!(city = %self.city, ids = ?page.deleted_ids, "pending queue entries were trimmed from the stream; their orders' timers queue them again");
            }
            for entry in &page.claimed {
                pass.claimed += 1;
                if self.take_over(dispatcher, entry).await {
                    pass.dead_lettered += 1;
                }
            }
            if self.cursor == CURSOR_START {
                pass.complete = true;
                break;
            }
        }
        Ok(pass)
    }

    async fn claim_page(
        &self,
        dispatcher: &Dispatcher,
    ) -> redis::RedisResult<StreamAutoClaimReply> {
        redis::cmd("XAUTOCLAIM")
            .arg(dispatcher.store().keys().dispatch_queue(&self.city))
            .arg(DISPATCH_GROUP)
            .arg(&self.consumer)
            .arg(dispatcher.settings().queue_claim_idle_ms)
            .arg(&self.cursor)
            .arg("COUNT")
            .arg(dispatcher.settings().queue_claim_count)
            .query_async(&mut dispatcher.store().conn())
            .await
    }

    /// Handle one entry taken over; `true` when it was dead-lettered.
    async fn take_over(&self, dispatcher: &Dispatcher, entry: &StreamId) -> bool {
        let (city, consumer) = (self.city.as_str(), self.consumer.as_str());
        crate::metrics::inc("geodispatch_queue_entries_reclaimed_total", &[]);
        tracing::info!(city, id = %entry.id, consumer, "took over a queue entry of a stalled worker");
        let Some(order) = entry.get::<String>("order") else {
            if handle(dispatcher, city, entry).await {
                ack(dispatcher, city, &entry.id).await;
            }
            return false;
        };
        match dispatcher
            .dead_letter(city, &order, &entry.id, consumer)
            .await
        {
            Ok(DeadLetter::Moved) => {
                crate::metrics::inc("geodispatch_queue_dead_letters_total", &[]);
                tracing::warn!(
                    city,
                    order,
                    id = %entry.id,
                    max_deliveries = dispatcher.settings().queue_max_deliveries,
                    "queue entry never acknowledged: moved to the dead-letter stream, order failed"
                );
                true
            }
            Ok(DeadLetter::Deliverable) => {
                if handle(dispatcher, city, entry).await {
                    ack(dispatcher, city, &entry.id).await;
                }
                false
            }
            Ok(DeadLetter::Settled) => {
                ack(dispatcher, city, &entry.id).await;
                false
            }
            Ok(DeadLetter::NotHeld) => false,
            Err(err) => {
                tracing::warn!(
                    city,
                    order,
                    id = %entry.id,
                    error = &err as &dyn std::error::Error,
                    "reading the entry's deliveries failed; the entry stays pending"
                );
                false
            }
        }
    }
}

/// One worker of one city's queue: a blocking `XREADGROUP` on that city's stream only (one
/// stream per read keeps every read in one Cluster slot).
async fn run_worker(dispatcher: Dispatcher, city: String, consumer: String) {
    let key = dispatcher.store().keys().dispatch_queue(&city);
    let claim_every =
        Duration::from_millis((dispatcher.settings().queue_claim_idle_ms / 2).max(50));
    let mut next_claim = tokio::time::Instant::now();
    let mut reclaimer = Reclaimer::new(&city, &consumer);
    loop {
        if tokio::time::Instant::now() >= next_claim {
            next_claim = tokio::time::Instant::now() + claim_every;
            match reclaimer.pass(&dispatcher).await {
                // Stopped at its page bound: go on after one look at new entries.
                Ok(pass) if !pass.complete => next_claim = tokio::time::Instant::now(),
                Ok(_) => {}
                Err(err) => tracing::warn!(consumer, city, error = %err, "XAUTOCLAIM failed"),
            }
        }
        let mut conn = match dispatcher.store().pool().get().await {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(consumer, city, error = %err, "queue worker has no Redis connection; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut batch: Vec<StreamId> = Vec::new();
        // Never blocks past the next take-over pass (BLOCK 0 would wait forever: left out).
        let block = claim_every
            .min(Duration::from_secs(1))
            .min(next_claim.saturating_duration_since(tokio::time::Instant::now()));
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(DISPATCH_GROUP)
            .arg(&consumer)
            .arg("COUNT")
            .arg(1);
        if block.as_millis() > 0 {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&key).arg(">");
        // Pool connections have no response timeout (they block); bound the wait here.
        let limit = block + Duration::from_millis(dispatcher.settings().redis_timeout_ms);
        let read: redis::RedisResult<Option<StreamReadReply>> =
            match tokio::time::timeout(limit, cmd.query_async(&mut conn)).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(
                        consumer,
                        city,
                        "XREADGROUP did not answer in time; reconnecting"
                    );
                    conn.discard();
                    continue;
                }
            };
        match read {
            Ok(Some(reply)) => {
                for stream in reply.keys {
                    batch.extend(stream.ids);
                }
            }
            Ok(None) => {}
            Err(err) if err.code() == Some("NOGROUP") => {
                if let Err(err) = ensure_group(&dispatcher, &city).await {
                    tracing::warn!(error = %err, "creating the consumer groups failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Err(err) => {
                if crate::store::is_connection_error(&err) {
                    conn.discard();
                }
                tracing::warn!(consumer, city, error = %err, "XREADGROUP failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        drop(conn);
        for entry in batch {
            if handle(&dispatcher, &city, &entry).await {
                ack(&dispatcher, &city, &entry.id).await;
            }
        }
    }
}

/// Start `n` queue workers per city, named `{instance}-w{i}` in each city's group [`DISPATCH_GROUP`].
pub(crate) fn spawn_workers(
    dispatcher: Dispatcher,
    instance: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let cities: Vec<String> = dispatcher
        .cities()
        .all()
        .iter()
        .map(|c| c.id.to_string())
        .collect();
    let mut out = Vec::with_capacity(n * cities.len());
    for i in 0..n {
        for city in &cities {
            let dispatcher = dispatcher.clone();
            let consumer = format!("{instance}-w{i}");
            let city = city.clone();
            out.push(tokio::spawn(async move {
                if let Err(err) = ensure_group(&dispatcher, &city).await {
                    tracing::warn!(error = %err, "creating the consumer groups failed; the worker retries on NOGROUP");
                }
                run_worker(dispatcher, city, consumer).await
            }));
        }
    }
    out
}

/// Fire every due timer of every city once; returns how many fired. Safe to run in any number
/// of instances at once: the script checks that the timer is still due.
pub(crate) async fn fire_due_timers(dispatcher: &Dispatcher) -> redis::RedisResult<usize> {
    let mut fired = 0;
    let mut conn = dispatcher.store().conn();
    // One clock reading per scan: the script re-checks that each timer is due.
    let now: (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
    for city in dispatcher.cities().all() {
        let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(dispatcher.store().keys().timers(city.id.as_str()))
            .arg("-inf")
            .arg(crate::store::scripts::time_ms(now))
            .arg("LIMIT")
            .arg(0)
            .arg(200)
            .query_async(&mut conn)
            .await?;
        for order in due {
            match dispatcher.fire_timer(city.id.as_str(), &order).await {
                Ok(true) => {
                    fired += 1;
                    crate::metrics::inc("geodispatch_timers_fired_total", &[]);
                }
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(city = %city.id, order, error = &err as &dyn std::error::Error, "timer failed")
                }
            }
        }
    }
    Ok(fired)
}

/// Start the timer scan (every `timer_interval_ms`).
pub(crate) fn spawn_timers(dispatcher: Arc<Dispatcher>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(
            dispatcher.settings().timer_interval_ms,
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(err) = fire_due_timers(&dispatcher).await {
                tracing::warn!(error = %err, "timer scan failed");
            }
        }
    })
}
