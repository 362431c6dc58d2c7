//! The negative cache: recipients whose last lookup found no key, remembered for
//! `[lookup] negative_ttl` so that mail to them does not cost a DNS query each time.
//!
//! It lives in memory only: after a restart, one query per recipient rebuilds it. Its
//! size is bounded; past the bound the oldest entries go first. Every entry lives
//! equally long, so the order of insertion is also the order of expiry, and a queue
//! beside the map is all the bookkeeping that needs.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most recipients remembered by default.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Recipients without a key, each until its entry expires.
pub struct NegativeCache {
    /// `[lookup] negative_ttl`.
    ttl: Duration,
    /// The most entries kept.
    capacity: usize,
    /// The entries; a std mutex, held for a hash lookup at most, never across an await.
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Recipient to the instant its entry expires.
    until: HashMap<String, Instant>,
    /// The same entries (and stale copies of re-inserted ones) in insertion order.
    order: VecDeque<(String, Instant)>,
}

impl NegativeCache {
    pub fn new(ttl: Duration, capacity: usize) -> NegativeCache {
        NegativeCache {
            ttl,
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Whether `key` had no key less than `ttl` ago.
    pub fn contains(&self, key: &str, now: Instant) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.until.get(key).is_some_and(|until| *until > now)
    }

    /// Remembers that `key` has no key, from `now` on.
    pub fn insert(&self, key: String, now: Instant) {
        let until = now + self.ttl;
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.until.insert(key.clone(), until);
        inner.order.push_back((key, until));
        inner.prune(now, self.capacity);
    }

    /// Entries held, expired ones not yet pruned included.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .until
            .len()
    }
}

impl Inner {
    /// Drops expired entries and, past `capacity`, the oldest ones.
    fn prune(&mut self, now: Instant, capacity: usize) {
        while let Some((key, until)) = self.order.front() {
            let over = self.until.len() > capacity || self.order.len() > 2 * capacity;
            if *until > now && !over {
                break;
            }
            // A stale copy (the key was inserted again later) leaves the map alone.
            if self.until.get(key) == Some(until) {
                self.until.remove(key);
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(3600);

    #[test]
    fn an_entry_lives_exactly_the_ttl() {
        let cache = NegativeCache::new(TTL, 10);
        let t0 = Instant::now();
        cache.insert("a@example.org".into(), t0);
        assert!(cache.contains("a@example.org", t0));
        assert!(cache.contains("a@example.org", t0 + TTL - Duration::from_millis(1)));
        assert!(!cache.contains("a@example.org", t0 + TTL));
        assert!(!cache.contains("b@example.org", t0));
    }

    #[test]
    fn past_capacity_the_oldest_entry_goes_first() {
        let cache = NegativeCache::new(TTL, 3);
        let t0 = Instant::now();
        for (i, key) in ["a", "b", "c", "d"].iter().enumerate() {
            cache.insert(key.to_string(), t0 + Duration::from_secs(i as u64));
        }
        assert_eq!(cache.len(), 3);
        let now = t0 + Duration::from_secs(4);
        assert!(!cache.contains("a", now));
        assert!(["b", "c", "d"].iter().all(|k| cache.contains(k, now)));
    }

    #[test]
    fn expired_entries_are_pruned_on_insert() {
        let cache = NegativeCache::new(TTL, 100);
        let t0 = Instant::now();
        cache.insert("old".into(), t0);
        cache.insert("new".into(), t0 + TTL);
        assert_eq!(cache.len(), 1);
        assert!(cache.contains("new", t0 + TTL));
    }

    #[test]
    fn reinserting_renews_and_a_stale_copy_does_not_evict_the_renewal() {
        let cache = NegativeCache::new(TTL, 3);
        let t0 = Instant::now();
        cache.insert("a".into(), t0);
        cache.insert("a".into(), t0 + TTL / 2);
        cache.insert("b".into(), t0 + TTL / 2);
        // The first copy of "a" is at the front of the queue and expires now; pruning
        // it must leave the renewal alone.
        let later = t0 + TTL;
        cache.insert("c".into(), later);
        assert!(cache.contains("a", later));
        assert!(
            !cache.contains("a", later + TTL / 2),
            "the renewal expires too"
        );
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn the_queue_stays_bounded_under_renewals() {
        let cache = NegativeCache::new(TTL, 4);
        let t0 = Instant::now();
        for i in 0..1000 {
            cache.insert("same".into(), t0 + Duration::from_millis(i));
        }
        let inner = cache.inner.lock().unwrap();
        assert!(inner.order.len() <= 8, "{}", inner.order.len());
        assert_eq!(inner.until.len(), 1);
    }
}
