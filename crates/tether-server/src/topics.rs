//! Topics: the latest value of each, and who subscribes to what.
//!
//! The store sits behind [`TopicStore`] so that a shared store (one per cluster) can replace
//! the in-memory one without touching the session code.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

/// The hasher of the maps looked up per publish: foldhash, several times faster than the
/// standard SipHash on short keys, and seeded per process (topic names come from clients).
type FastHash = foldhash::quality::RandomState;
use std::sync::Arc;

use bytes::Bytes;
use hashbrown::hash_map::EntryRef;
use tether_protocol::{Position, Selector};

/// A topic's current value and its position in the topic's log.
#[derive(Debug, Clone)]
pub struct TopicValue {
    /// The topic path.
    pub topic: Arc<str>,
    /// The latest value.
    pub value: Bytes,
    /// Its position.
    pub position: Position,
}

/// Where topic values live.
pub trait TopicStore: Send {
    /// Records a new value; returns it as stored, with its position.
    fn set(&mut self, topic: &str, value: NewValue<'_>) -> &TopicValue;
    /// Records a value at a position decided elsewhere (a shared log).
    fn put(&mut self, topic: &str, value: Bytes, position: Position) -> &TopicValue;
    /// Forgets the topics of a partition (a shared log lost it); returns them.
    fn remove_partition(&mut self, partition: u32) -> Vec<Arc<str>>;
    /// Current values of the topics a selector matches.
    fn current(&self, selector: &Selector) -> Vec<TopicValue>;
    /// Every topic's current value.
    fn all(&self) -> Vec<TopicValue>;
    /// Number of topics.
    fn len(&self) -> usize;
    /// Whether there are no topics.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The in-memory store: one partition per topic, offsets counting that topic's updates.
#[derive(Debug, Default)]
pub struct MemoryTopicStore {
    /// hashbrown for `entry_ref`: one lookup by `&str` per publish, and the stored value lent
    /// back to the fan-out instead of a clone of it (two reference counts less per publish).
    topics: hashbrown::HashMap<Arc<str>, TopicValue, FastHash>,
    next_partition: u32,
}

impl TopicStore for MemoryTopicStore {
    fn set(&mut self, topic: &str, value: NewValue<'_>) -> &TopicValue {
        match self.topics.entry_ref(topic) {
            EntryRef::Occupied(e) => {
                let existing = e.into_mut();
                value.write_into(&mut existing.value);
                existing.position.offset += 1;
                existing
            }
            EntryRef::Vacant(e) => {
                let position = first_position(&mut self.next_partition);
                insert_new(e, topic, value.into_bytes(), position)
            }
        }
    }

    fn put(&mut self, topic: &str, value: Bytes, position: Position) -> &TopicValue {
        // Topics created later get partitions of their own (restored ones keep theirs).
        self.next_partition = self.next_partition.max(position.partition.wrapping_add(1));
        match self.topics.entry_ref(topic) {
            EntryRef::Occupied(e) => {
                let existing = e.into_mut();
                existing.value = value;
                existing.position = position;
                existing
            }
            EntryRef::Vacant(e) => insert_new(e, topic, value, position),
        }
    }

    fn remove_partition(&mut self, partition: u32) -> Vec<Arc<str>> {
        let gone: Vec<Arc<str>> = self
            .topics
            .values()
            .filter(|t| t.position.partition == partition)
            .map(|t| t.topic.clone())
            .collect();
        for t in &gone {
            self.topics.remove(t);
        }
        gone
    }

    fn current(&self, selector: &Selector) -> Vec<TopicValue> {
        if selector.is_exact() {
            return self
                .topics
                .get(selector.as_str())
                .cloned()
                .into_iter()
                .collect();
        }
        let mut found: Vec<TopicValue> = self
            .topics
            .values()
            .filter(|t| selector.matches(&t.topic))
            .cloned()
            .collect();
        found.sort_by(|a, b| a.topic.cmp(&b.topic));
        found
    }

    fn all(&self) -> Vec<TopicValue> {
        self.topics.values().cloned().collect()
    }

    fn len(&self) -> usize {
        self.topics.len()
    }
}

/// The position of a new topic's first value: a partition of its own.
fn first_position(next_partition: &mut u32) -> Position {
    let partition = *next_partition;
    *next_partition = partition.wrapping_add(1);
    Position {
        partition,
        offset: 1,
    }
}

/// A topic's new value, as a store gets it.
#[derive(Debug)]
pub enum NewValue<'a> {
    /// Owned already (given by the application, `Server::publish`): stored as it is.
    Owned(Bytes),
    /// Part of a larger buffer (a received message, up to a batch): stored as a copy, so that a
    /// topic's latest value, which may live for long, does not keep the whole buffer alive.
    Copied(&'a [u8]),
}

impl From<Bytes> for NewValue<'static> {
    fn from(value: Bytes) -> Self {
        NewValue::Owned(value)
    }
}

impl NewValue<'_> {
    /// Replaces `stored` with this value. A copy goes into `stored`'s own allocation when it
    /// has the same length and nothing else holds it (a topic's values are often the same
    /// size): no allocation and no free per publish then.
    fn write_into(self, stored: &mut Bytes) {
        match self {
            NewValue::Owned(value) => *stored = value,
            NewValue::Copied(value) => {
                if stored.len() == value.len()
                    && let Ok(mut own) = std::mem::take(stored).try_into_mut()
                {
                    own.copy_from_slice(value);
                    *stored = own.freeze();
                } else {
                    *stored = Bytes::copy_from_slice(value);
                }
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            NewValue::Owned(value) => value,
            NewValue::Copied(value) => Bytes::copy_from_slice(value),
        }
    }
}

/// A topic's first value: the map's key and the value's topic share one allocation.
fn insert_new<'m>(
    entry: hashbrown::hash_map::VacantEntryRef<'m, '_, Arc<str>, str, TopicValue, FastHash>,
    topic: &str,
    value: Bytes,
    position: Position,
) -> &'m TopicValue {
    let topic: Arc<str> = Arc::from(topic);
    entry.insert_with_key(
        topic.clone(),
        TopicValue {
            topic,
            value,
            position,
        },
    )
}

/// Subscriptions, indexed for fan-out: exact selectors by topic, wildcards in a list.
#[derive(Debug)]
pub(crate) struct SubscriptionIndex<K> {
    exact: HashMap<String, Vec<K>, FastHash>,
    wildcard: Vec<(Selector, K)>,
}

impl<K> Default for SubscriptionIndex<K> {
    fn default() -> Self {
        SubscriptionIndex {
            exact: HashMap::default(),
            wildcard: Vec::new(),
        }
    }
}

impl<K: Eq + Hash + Clone> SubscriptionIndex<K> {
    pub(crate) fn add(&mut self, selector: &Selector, key: K) {
        if selector.is_exact() {
            self.exact
                .entry(selector.as_str().to_owned())
                .or_default()
                .push(key);
        } else {
            self.wildcard.push((selector.clone(), key));
        }
    }

    pub(crate) fn remove(&mut self, selector: &Selector, key: &K) {
        if selector.is_exact() {
            if let Some(list) = self.exact.get_mut(selector.as_str()) {
                if let Some(i) = list.iter().position(|k| k == key) {
                    list.swap_remove(i);
                }
                if list.is_empty() {
                    self.exact.remove(selector.as_str());
                }
            }
        } else if let Some(i) = self
            .wildcard
            .iter()
            .position(|(s, k)| s == selector && k == key)
        {
            self.wildcard.swap_remove(i);
        }
    }

    /// Every key subscribed to `topic`, once each. Linear in the subscribers: fan-out to many
    /// sessions must not cost the square of their number.
    pub(crate) fn matching(&self, topic: &str) -> Vec<K> {
        let mut keys = Vec::new();
        self.for_each_matching(topic, |k, _| keys.push(k.clone()));
        keys
    }

    /// Calls `f` with every key subscribed to `topic`, once each, in the order of
    /// [`SubscriptionIndex::matching`], without collecting them (fan-out to many sessions
    /// runs this per update). `f`'s second argument is `true` on a call known to be the last
    /// (when only exact selectors match), so that the caller can move what it would clone.
    pub(crate) fn for_each_matching(&self, topic: &str, mut f: impl FnMut(&K, bool)) {
        // One session subscribes to one exact text at most once, so the exact list has no
        // duplicates; wildcards may repeat a session, which the set catches.
        let exact: &[K] = self.exact.get(topic).map_or(&[], Vec::as_slice);
        let mut matched = self
            .wildcard
            .iter()
            .filter(|(s, _)| s.matches(topic))
            .peekable();
        let only_exact = matched.peek().is_none();
        for (i, key) in exact.iter().enumerate() {
            f(key, only_exact && i + 1 == exact.len());
        }
        if only_exact {
            return;
        }
        let mut seen: HashSet<&K, FastHash> = exact.iter().collect();
        for (_, key) in matched {
            if seen.insert(key) {
                f(key, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> Selector {
        Selector::parse(s).expect("valid")
    }

    #[test]
    fn store_keeps_latest_and_counts_offsets() {
        let mut store = MemoryTopicStore::default();
        let a1 = store.set("a/x", Bytes::from_static(b"1").into()).clone();
        let a2 = store.set("a/x", Bytes::from_static(b"2").into()).clone();
        let b = store.set("b", Bytes::from_static(b"3").into());
        assert_eq!(a1.position.partition, a2.position.partition);
        assert_eq!((a1.position.offset, a2.position.offset), (1, 2));
        assert_ne!(b.position.partition, a1.position.partition);
        let cur = store.current(&sel("a/*"));
        assert_eq!(cur.len(), 1);
        assert_eq!(cur[0].value, Bytes::from_static(b"2"));
        assert!(store.current(&sel("c")).is_empty());
    }

    #[test]
    fn a_copied_value_reuses_the_allocation_nobody_else_holds() {
        let mut store = MemoryTopicStore::default();
        let first = store.set("a", NewValue::Copied(b"one")).value.as_ptr();
        let second = store.set("a", NewValue::Copied(b"two"));
        assert_eq!(second.value, Bytes::from_static(b"two"));
        assert_eq!(second.position.offset, 2);
        assert_eq!(
            second.value.as_ptr(),
            first,
            "same length, unshared: reused"
        );
        let held = second.value.clone();
        let third = store.set("a", NewValue::Copied(b"333"));
        assert_eq!(third.value, Bytes::from_static(b"333"));
        assert_ne!(
            third.value.as_ptr(),
            held.as_ptr(),
            "a held value is left alone"
        );
        assert_eq!(held, Bytes::from_static(b"two"));
        let longer = store.set("a", NewValue::Copied(b"four"));
        assert_eq!(
            (longer.value.clone(), longer.position.offset),
            (Bytes::from_static(b"four"), 4)
        );
    }

    #[test]
    fn index_matches_exact_and_wildcards_once() {
        let mut idx = SubscriptionIndex::default();
        idx.add(&sel("a/b"), 1);
        idx.add(&sel("a/*"), 1);
        idx.add(&sel("a/**"), 2);
        assert_eq!(idx.matching("a/b"), vec![1, 2]);
        idx.remove(&sel("a/b"), &1);
        assert_eq!(idx.matching("a/b"), vec![1, 2]);
        idx.remove(&sel("a/*"), &1);
        assert_eq!(idx.matching("a/b"), vec![2]);
        assert!(idx.matching("z").is_empty());
    }

    #[test]
    fn only_a_call_known_to_be_the_last_says_so() {
        let calls = |idx: &SubscriptionIndex<u32>, topic: &str| {
            let mut got = Vec::new();
            idx.for_each_matching(topic, |k, last| got.push((*k, last)));
            got
        };
        let mut idx = SubscriptionIndex::default();
        idx.add(&sel("a/b"), 1);
        idx.add(&sel("a/b"), 2);
        assert_eq!(calls(&idx, "a/b"), vec![(1, false), (2, true)]);
        // With a wildcard matching too, the exact keys cannot know they are the last ones.
        idx.add(&sel("a/*"), 3);
        assert_eq!(calls(&idx, "a/b"), vec![(1, false), (2, false), (3, false)]);
        assert!(calls(&idx, "z").is_empty());
    }
}
