//! Bounded, sharded, byte-weighted caches shared by all reader threads (quick_cache's S3-FIFO).
//! A miss runs the loader without holding any shard lock; concurrent misses on the same key
//! wait for the first loader instead of decompressing the block twice.

use std::sync::Arc;

use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::{DefaultHashBuilder, OptionsBuilder, Weighter};

/// Something whose memory cost the cache can count.
pub(crate) trait Weighted {
    /// Approximate bytes held.
    fn weight(&self) -> u64;
}

impl Weighted for Arc<[u8]> {
    fn weight(&self) -> u64 {
        self.len() as u64
    }
}

#[derive(Clone)]
pub(crate) struct W;

impl<K, V: Weighted> Weighter<K, V> for W {
    fn weight(&self, _key: &K, val: &V) -> u64 {
        // Zero-weight items would never be evicted; count at least one byte.
        val.weight().max(1)
    }
}

/// A byte-budgeted cache from `K` to a cheaply clonable value.
pub(crate) struct ByteCache<K, V> {
    inner: Cache<K, V, W, DefaultHashBuilder, DefaultLifecycle<K, V>>,
}

impl<K: Eq + std::hash::Hash + Clone, V: Weighted + Clone> ByteCache<K, V> {
    /// A cache holding at most `budget` bytes of values that are each at most `max_item` bytes.
    pub(crate) fn new(budget: u64, max_item: u64) -> Self {
        let max_item = max_item.max(1);
        // Every shard gets budget/shards bytes; keep room for several of the largest items per
        // shard so that big blocks still get cached with a small budget.
        let shards = (budget / (max_item * 4)).clamp(1, 16) as usize;
        let items = (budget / max_item.min(4096)).clamp(16, 1 << 20) as usize;
        let built = OptionsBuilder::new()
            .shards(shards.next_power_of_two())
            .estimated_items_capacity(items)
            .weight_capacity(budget)
            .build();
        let inner = match built {
            Ok(opts) => Cache::with_options(
                opts,
                W,
                DefaultHashBuilder::default(),
                DefaultLifecycle::default(),
            ),
            // build() only fails for a missing field, all of which are set above.
            Err(_) => Cache::with_weighter(items, budget, W),
        };
        ByteCache { inner }
    }

    /// Returns the cached value for `key`, or runs `load` (outside any lock) and caches it.
    pub(crate) fn get_or_load<E>(
        &self,
        key: K,
        load: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        self.inner.get_or_insert_with(&key, load)
    }

    /// Bytes currently held.
    pub(crate) fn weight(&self) -> u64 {
        self.inner.weight()
    }

    /// The byte budget.
    pub(crate) fn capacity(&self) -> u64 {
        self.inner.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_budget_is_never_exceeded() {
        let c: ByteCache<u64, Arc<[u8]>> = ByteCache::new(1 << 20, 64 << 10);
        for k in 0..200u64 {
            let v: Arc<[u8]> = vec![k as u8; 64 << 10].into();
            let got = c
                .get_or_load(k, || Ok::<_, ()>(v.clone()))
                .expect("loader never fails");
            assert_eq!(got[0], k as u8);
            assert!(
                c.weight() <= c.capacity(),
                "{} > {}",
                c.weight(),
                c.capacity()
            );
        }
        assert!(c.weight() > 0);
    }

    #[test]
    fn test_hit_skips_loader_and_error_is_not_cached() {
        let c: ByteCache<u64, Arc<[u8]>> = ByteCache::new(1 << 20, 4096);
        assert!(c.get_or_load(1, || Err::<Arc<[u8]>, _>("boom")).is_err());
        let v = c.get_or_load(1, || Ok::<Arc<[u8]>, &str>(vec![7u8; 10].into()));
        assert_eq!(v.map(|v| v[0]), Ok(7));
        let v = c.get_or_load(1, || Err::<Arc<[u8]>, _>("loader must not run on a hit"));
        assert_eq!(v.map(|v| v.len()), Ok(10));
    }
}
