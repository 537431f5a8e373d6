//! The bound on open event streams, per key and per instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Open event streams per key in this instance (bounded by `sse_max_per_key`), and in all
/// (bounded by [`MAX_STREAMS`]): each holds a pooled Redis connection, which the queue workers
/// need too.
#[derive(Debug, Default)]
pub(crate) struct StreamCounter {
    open: Mutex<HashMap<String, u64>>,
}

/// Open event streams per instance at most: half of the dedicated Redis connection pool.
pub(crate) const MAX_STREAMS: u64 = 32;

/// One open event stream; the count goes down when it is dropped.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    counter: Arc<StreamCounter>,
    key_id: String,
}

impl StreamCounter {
    /// Take a slot for `key_id`, or `None` when it already has `max` open streams.
    pub(crate) fn acquire(self: &Arc<Self>, key_id: &str, max: u64) -> Option<StreamSlot> {
        let mut open = self.open.lock().expect("not poisoned");
        if open.values().sum::<u64>() >= MAX_STREAMS {
            return None;
        }
        let n = open.entry(key_id.to_owned()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            counter: self.clone(),
            key_id: key_id.to_owned(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.counter.open.lock().expect("not poisoned");
        if let Some(n) = open.get_mut(&self.key_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_at_most_its_streams_and_gets_them_back_when_they_close() {
        let counter = Arc::new(StreamCounter::default());
        let first = counter.acquire("k", 2).expect("first");
        let _second = counter.acquire("k", 2).expect("second");
        assert!(counter.acquire("k", 2).is_none(), "a third is refused");
        assert!(counter.acquire("other", 2).is_some(), "other keys are not");
        drop(first);
        assert!(
            counter.acquire("k", 2).is_some(),
            "a closed stream frees its slot"
        );
    }

    #[test]
    fn an_instance_holds_at_most_max_streams() {
        let counter = Arc::new(StreamCounter::default());
        let slots: Vec<_> = (0..MAX_STREAMS)
            .map(|i| {
                counter
                    .acquire(&format!("k{i}"), 1)
                    .expect("under the bound")
            })
            .collect();
        assert!(counter.acquire("one-more", 1).is_none());
        drop(slots);
        assert!(counter.acquire("one-more", 1).is_some());
    }
}
