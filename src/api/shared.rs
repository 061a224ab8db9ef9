//! One copy of equal immutable values across all cached Consumers.
//!
//! A fleet is made of near copies: at 10,000 Consumers the same resource lists
//! (the policies' bounds, the recommendations in the statuses, which move in
//! `cpuIncrement` steps) were held 10,000 times over, ~20 lists per Consumer,
//! each an `Arc` of strings. A [`Pool`] hands out the copy it already holds of an
//! equal value, so a value costs its memory once however many Consumers hold it.
//!
//! Values are shared where they are kept (the Consumer cache), not where they are
//! made: a reconcile pass builds and drops many lists, and only the ones it keeps
//! pay for a lookup. The pool holds a strong reference to each value and forgets
//! the ones nobody else holds when it has doubled since it last looked, so it
//! never holds more than about twice what is in use.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A part of a resource held once (`Arc`), read and written as the part itself
/// (the same JSON, the same schema): a clone copies nothing, and [`Pool`]s can
/// hand out one copy to every holder of an equal part. Changed through
/// [`Shared::make_mut`] (copied first when shared).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Shared<T>(Arc<T>);

impl<T> Shared<T> {
    pub fn new(value: T) -> Self {
        Shared(Arc::new(value))
    }

    /// Whether both hold the same copy.
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl<T: Clone> Shared<T> {
    pub fn make_mut(this: &mut Self) -> &mut T {
        Arc::make_mut(&mut this.0)
    }
}

impl<T: Content> Shared<T> {
    /// The pool's copy of an equal part ([`Pool::share`]).
    pub fn share(&mut self, pool: &Pool<T>) {
        pool.share(&mut self.0);
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Copy on write, as [`Shared::make_mut`]: code that changes a part in place
/// (a status' conditions) reads as if it held the part itself.
impl<T: Clone> DerefMut for Shared<T> {
    fn deref_mut(&mut self) -> &mut T {
        Arc::make_mut(&mut self.0)
    }
}

/// A list's items, as the list itself gives them (moved out when this is the
/// only holder, cloned otherwise).
impl<T: Clone> IntoIterator for Shared<Vec<T>> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;

    fn into_iter(self) -> Self::IntoIter {
        Arc::unwrap_or_clone(self.0).into_iter()
    }
}

impl<T> From<T> for Shared<T> {
    fn from(value: T) -> Self {
        Shared::new(value)
    }
}

impl<T: Serialize> Serialize for Shared<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Shared<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Shared::new)
    }
}

/// `T`'s schema, as schemars gives an `Arc<T>`.
impl<T: JsonSchema> JsonSchema for Shared<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// What a pool needs of a value: a hash of its content and content equality
/// (the types pooled, `Quantity` among them, do not all implement `Hash`).
pub trait Content {
    fn hash_content(&self, h: &mut impl Hasher);
    fn same_content(&self, other: &Self) -> bool;
}

impl Content for str {
    fn hash_content(&self, h: &mut impl Hasher) {
        h.write(self.as_bytes());
    }

    fn same_content(&self, other: &Self) -> bool {
        self == other
    }
}

/// Below this many values the pool is not pruned.
const MIN_PRUNE_AT: usize = 1024;

struct Table<T: ?Sized> {
    by_hash: HashMap<u64, Vec<Arc<T>>>,
    len: usize,
    prune_at: usize,
}

pub struct Pool<T: ?Sized> {
    // Keyed: the values come from statuses and specs anyone with write access
    // to a Consumer writes.
    hasher: RandomState,
    table: Mutex<Table<T>>,
}

impl<T: ?Sized + Content> Default for Pool<T> {
    fn default() -> Self {
        Pool {
            hasher: RandomState::new(),
            table: Mutex::new(Table {
                by_hash: HashMap::new(),
                len: 0,
                prune_at: MIN_PRUNE_AT,
            }),
        }
    }
}

impl<T: ?Sized + Content> Pool<T> {
    /// Replaces `value` with the pool's copy of an equal value, or keeps it as
    /// the pool's copy when there is none.
    pub fn share(&self, value: &mut Arc<T>) {
        let mut h = self.hasher.build_hasher();
        value.hash_content(&mut h);
        let hash = h.finish();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = table.by_hash.entry(hash).or_default();
        if let Some(kept) = bucket.iter().find(|k| k.same_content(value)) {
            if !Arc::ptr_eq(kept, value) {
                *value = kept.clone();
            }
            return;
        }
        bucket.push(value.clone());
        table.len += 1;
        if table.len >= table.prune_at {
            table.prune();
        }
    }

    /// How many values the pool holds (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len
    }
}

impl<T: ?Sized> Table<T> {
    /// Forgets the values only the pool holds. Under the pool's lock nobody can
    /// take a new reference to such a value, so none is forgotten while in use.
    fn prune(&mut self) {
        self.by_hash.retain(|_, bucket| {
            bucket.retain(|v| Arc::strong_count(v) > 1);
            !bucket.is_empty()
        });
        self.len = self.by_hash.values().map(Vec::len).sum();
        self.prune_at = (self.len * 2).max(MIN_PRUNE_AT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_end_up_as_one_copy() {
        let pool = Pool::<str>::default();
        let mut a: Arc<str> = "100m".into();
        let mut b: Arc<str> = "100m".into();
        let mut c: Arc<str> = "200m".into();
        pool.share(&mut a);
        pool.share(&mut b);
        pool.share(&mut c);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!((&*a, &*c), ("100m", "200m"));
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn values_nobody_holds_are_forgotten_once_the_pool_has_doubled() {
        let pool = Pool::<str>::default();
        let mut kept: Arc<str> = "kept".into();
        pool.share(&mut kept);
        for i in 0..10 * MIN_PRUNE_AT {
            let mut v: Arc<str> = format!("gone-{i}").into();
            pool.share(&mut v);
        }
        assert!(pool.len() <= MIN_PRUNE_AT, "{}", pool.len());
        let mut again: Arc<str> = "kept".into();
        pool.share(&mut again);
        assert!(Arc::ptr_eq(&kept, &again), "a value in use stays pooled");
    }
}
