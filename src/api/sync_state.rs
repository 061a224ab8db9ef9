//! `Consumer.status.lastSyncState`: the last metrics per partition, a JSON object
//! keyed by partition number. Held as one vector of (partition, metrics) rather
//! than a `BTreeMap<String, _>`: a fresh read of 100 partitions was 100 key
//! strings and the map's nodes per Consumer per pass, built and freed again.
//! Reads and writes the same JSON as the map (keys in the map's order, the last
//! of a repeated key kept, any key at all), with the map's schema.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::status::PartitionState;

/// Entries whose key is a partition number as konsumer and Konsumerator write it
/// (decimal digits, no sign, no leading zero, within `u32`) are kept as numbers;
/// any other key as its text. Each list is in the JSON object's key order, each
/// key once, so equal values have equal representations.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SyncState {
    numbered: Vec<(u32, PartitionState)>,
    other: Vec<(Box<str>, PartitionState)>,
}

/// Where a partition number's decimal text sorts among others (byte order of
/// the text): its digits left-aligned in ten places, then the count of digits
/// ("1" < "10" < "100" < "101" < "2").
fn text_order(partition: u32) -> u64 {
    const PAD: [u64; 11] = [
        1,
        10,
        100,
        1_000,
        10_000,
        100_000,
        1_000_000,
        10_000_000,
        100_000_000,
        1_000_000_000,
        10_000_000_000,
    ];
    let digits = partition.checked_ilog10().unwrap_or(0) as usize + 1;
    (u64::from(partition) * PAD[10 - digits]) << 4 | digits as u64
}

/// The partition number `key` stands for when konsumer would write it so.
fn canonical(key: &str) -> Option<u32> {
    let b = key.as_bytes();
    let digits = !b.is_empty() && b.len() <= 10 && b.iter().all(u8::is_ascii_digit);
    if !digits || (b.len() > 1 && b[0] == b'0') {
        return None;
    }
    key.parse().ok()
}

/// One entry in key order: a number's key, or another key's text.
enum Key<'a> {
    Number(u32),
    Text(&'a str),
}

impl SyncState {
    pub fn new() -> Self {
        SyncState::default()
    }

    /// The metrics of these partitions.
    pub fn from_partitions(partitions: &BTreeMap<u32, PartitionState>) -> Self {
        // In numeric order, the numbers of each length are in text order too: the
        // text order is a merge of those runs (at most ten), by their heads.
        let last = partitions.last_key_value().map_or(0, |(p, _)| *p);
        let mut runs: Vec<_> = (0..10u32)
            .map_while(|d| {
                let low = if d == 0 { 0 } else { 10u32.checked_pow(d)? };
                let high = 10u32.checked_pow(d + 1).map_or(u32::MAX, |h| h - 1);
                (low <= last).then(|| partitions.range(low..=high).peekable())
            })
            .collect();
        let mut numbered = Vec::with_capacity(partitions.len());
        loop {
            let mut first: Option<(usize, u64)> = None;
            for (i, run) in runs.iter_mut().enumerate() {
                if let Some((p, _)) = run.peek() {
                    let order = text_order(**p);
                    if first.is_none_or(|(_, o)| order < o) {
                        first = Some((i, order));
                    }
                }
            }
            let Some((p, s)) = first.and_then(|(i, _)| runs[i].next()) else {
                break;
            };
            numbered.push((*p, s.clone()));
        }
        SyncState {
            numbered,
            other: Vec::new(),
        }
    }

    /// Sets `key`'s metrics, replacing what it had (as a map does).
    pub fn insert(&mut self, key: &str, state: PartitionState) {
        match canonical(key) {
            Some(p) => self.insert_number(p, state),
            None => self.insert_text(key.into(), state),
        }
    }

    fn insert_number(&mut self, partition: u32, state: PartitionState) {
        let order = text_order(partition);
        match self
            .numbered
            .binary_search_by_key(&order, |(q, _)| text_order(*q))
        {
            Ok(i) => self.numbered[i].1 = state,
            Err(i) => self.numbered.insert(i, (partition, state)),
        }
    }

    fn insert_text(&mut self, key: Box<str>, state: PartitionState) {
        match self.other.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => self.other[i].1 = state,
            Err(i) => self.other.insert(i, (key, state)),
        }
    }

    pub fn len(&self) -> usize {
        self.numbered.len() + self.other.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The metrics under the key `partition` is written as.
    pub fn get(&self, partition: u32) -> Option<&PartitionState> {
        let order = text_order(partition);
        self.numbered
            .binary_search_by_key(&order, |(p, _)| text_order(*p))
            .ok()
            .map(|i| &self.numbered[i].1)
    }

    /// The metrics under a key, as on the map.
    pub fn get_key(&self, key: &str) -> Option<&PartitionState> {
        match canonical(key) {
            Some(p) => self.get(p),
            None => self
                .other
                .binary_search_by(|(k, _)| (**k).cmp(key))
                .ok()
                .map(|i| &self.other[i].1),
        }
    }

    /// Every entry in the JSON object's key order.
    fn entries(&self) -> impl Iterator<Item = (Key<'_>, &PartitionState)> {
        let mut numbered = self.numbered.iter().peekable();
        let mut other = self.other.iter().peekable();
        let mut digits = itoa::Buffer::new();
        std::iter::from_fn(move || {
            let number_first = match (numbered.peek(), other.peek()) {
                (None, None) => return None,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((p, _)), Some((k, _))) => digits.format(*p).cmp(&**k) != Ordering::Greater,
            };
            if number_first {
                numbered.next().map(|(p, s)| (Key::Number(*p), s))
            } else {
                other.next().map(|(k, s)| (Key::Text(k), s))
            }
        })
    }

    /// (key, metrics) in the JSON object's key order.
    pub fn iter(&self) -> impl Iterator<Item = (String, &PartitionState)> {
        self.entries().map(|(k, s)| match k {
            Key::Number(p) => (p.to_string(), s),
            Key::Text(t) => (t.to_string(), s),
        })
    }

    /// The metrics per partition, in the JSON object's key order, for every key
    /// that reads as a `u32` (as `str::parse` reads it: `"007"` is partition 7).
    pub fn partitions(&self) -> impl Iterator<Item = (u32, &PartitionState)> {
        self.entries().filter_map(|(k, s)| match k {
            Key::Number(p) => Some((p, s)),
            Key::Text(t) => t.parse().ok().map(|p| (p, s)),
        })
    }

    /// Exactly the length of its JSON (`serde_json::to_vec(self)`), counted
    /// without writing it.
    pub fn json_len(&self) -> usize {
        const ENTRY: usize = r#""":{"productionRate":,"consumptionRate":,"messageBehind":}"#.len();
        let numbers = |s: &PartitionState| {
            i64_len(s.production_rate) + i64_len(s.consumption_rate) + i64_len(s.messages_behind)
        };
        let numbered: usize = self
            .numbered
            .iter()
            .map(|(p, s)| ENTRY + u32_len(*p) + numbers(s))
            .sum();
        let other: usize = self
            .other
            .iter()
            .map(|(k, s)| ENTRY - 2 + escaped_len(k) + numbers(s))
            .sum();
        // The braces, and a comma between entries.
        2 + numbered + other + self.len().saturating_sub(1)
    }
}

fn u32_len(n: u32) -> usize {
    n.checked_ilog10().map_or(1, |l| l as usize + 1)
}

fn i64_len(n: i64) -> usize {
    usize::from(n < 0)
        + n.unsigned_abs()
            .checked_ilog10()
            .map_or(1, |l| l as usize + 1)
}

/// A string's JSON length, quotes included, as serde_json escapes it.
fn escaped_len(text: &str) -> usize {
    2 + text
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\x08' | b'\x0c' | b'\n' | b'\r' | b'\t' => 2,
            0..0x20 => 6,
            _ => 1,
        })
        .sum::<usize>()
}

impl FromIterator<(String, PartitionState)> for SyncState {
    fn from_iter<I: IntoIterator<Item = (String, PartitionState)>>(iter: I) -> Self {
        let mut state = SyncState::new();
        for (k, v) in iter {
            state.insert(&k, v);
        }
        state
    }
}

impl fmt::Debug for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for SyncState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        let mut digits = itoa::Buffer::new();
        for (k, v) in self.entries() {
            match k {
                Key::Number(p) => map.serialize_entry(digits.format(p), v)?,
                Key::Text(t) => map.serialize_entry(t, v)?,
            }
        }
        map.end()
    }
}

/// A key as read: a partition number without allocating, any other key as text.
enum ReadKey {
    Number(u32),
    Text(Box<str>),
}

impl<'de> Deserialize<'de> for ReadKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = ReadKey;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<ReadKey, E> {
                Ok(canonical(key).map_or_else(|| ReadKey::Text(key.into()), ReadKey::Number))
            }

            fn visit_string<E: serde::de::Error>(self, key: String) -> Result<ReadKey, E> {
                Ok(canonical(&key)
                    .map_or_else(|| ReadKey::Text(key.into_boxed_str()), ReadKey::Number))
            }
        }
        // As `String` asks for its value.
        deserializer.deserialize_string(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for SyncState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StateVisitor;
        impl<'de> Visitor<'de> for StateVisitor {
            type Value = SyncState;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of partition numbers to metrics")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut state = SyncState {
                    numbered: Vec::with_capacity(map.size_hint().unwrap_or(0).min(1_024)),
                    other: Vec::new(),
                };
                while let Some((k, v)) = map.next_entry::<ReadKey, PartitionState>()? {
                    match k {
                        // Written by konsumer, the keys come in order: appended.
                        ReadKey::Number(p)
                            if state
                                .numbered
                                .last()
                                .is_none_or(|(q, _)| text_order(*q) < text_order(p)) =>
                        {
                            state.numbered.push((p, v))
                        }
                        ReadKey::Number(p) => state.insert_number(p, v),
                        ReadKey::Text(t) => state.insert_text(t, v),
                    }
                }
                state.numbered.shrink_to_fit();
                Ok(state)
            }
        }
        deserializer.deserialize_map(StateVisitor)
    }
}

impl JsonSchema for SyncState {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        <BTreeMap<String, PartitionState>>::schema_name()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        <BTreeMap<String, PartitionState>>::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state(n: i64) -> PartitionState {
        PartitionState {
            production_rate: n,
            consumption_rate: -n,
            messages_behind: n.wrapping_mul(7),
        }
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => (0u32..2_000).prop_map(|p| p.to_string()),
            1 => any::<u32>().prop_map(|p| p.to_string()),
            1 => "[0-9]{1,11}",
            1 => "[+-]?0*[0-9]{0,4}",
            1 => any::<String>(),
            1 => "[\"\\\\\\x00-\\x1f\\x7fé0-9]{0,4}",
        ]
    }

    fn entries() -> impl Strategy<Value = Vec<(String, i64)>> {
        proptest::collection::vec((key(), any::<i64>()), 0..40)
    }

    fn as_map(entries: &[(String, i64)]) -> BTreeMap<String, PartitionState> {
        entries
            .iter()
            .map(|(k, n)| (k.clone(), state(*n)))
            .collect()
    }

    /// A JSON object with these entries, in this order, repeats included.
    fn object(entries: &[(String, i64)]) -> String {
        let body: Vec<String> = entries
            .iter()
            .map(|(k, n)| {
                format!(
                    "{}:{}",
                    serde_json::to_string(k).unwrap(),
                    serde_json::to_string(&state(*n)).unwrap()
                )
            })
            .collect();
        format!("{{{}}}", body.join(","))
    }

    proptest! {
        #[test]
        fn it_reads_and_writes_exactly_the_json_of_the_map(entries in entries()) {
            let text = object(&entries);
            let map: BTreeMap<String, PartitionState> = serde_json::from_str(&text).unwrap();
            let state: SyncState = serde_json::from_str(&text).unwrap();
            let written = serde_json::to_string(&state).unwrap();
            prop_assert_eq!(&written, &serde_json::to_string(&map).unwrap());
            prop_assert_eq!(state.json_len(), written.len());
            prop_assert_eq!(state.len(), map.len());
            for (k, v) in &map {
                prop_assert_eq!(state.get_key(k), Some(v));
            }
            prop_assert_eq!(&state, &as_map(&entries).into_iter().collect::<SyncState>());
            // Through YAML too (the local mode's files), and the old map's reading
            // of partition numbers.
            let yaml = serde_saphyr::to_string(&map).unwrap();
            let from_yaml: SyncState = serde_saphyr::from_str(&yaml).unwrap();
            prop_assert_eq!(&from_yaml, &state);
            let parsed: BTreeMap<u32, PartitionState> =
                state.partitions().map(|(p, s)| (p, s.clone())).collect();
            let old: BTreeMap<u32, PartitionState> = map
                .iter()
                .filter_map(|(k, v)| k.parse::<u32>().ok().map(|p| (p, v.clone())))
                .collect();
            prop_assert_eq!(parsed, old);
        }

        #[test]
        fn from_partitions_writes_what_the_map_of_their_numbers_wrote(
            partitions in proptest::collection::btree_map(any::<u32>(), any::<i64>(), 0..60),
        ) {
            let partitions: BTreeMap<u32, PartitionState> =
                partitions.into_iter().map(|(p, n)| (p, state(n))).collect();
            let map: BTreeMap<String, PartitionState> =
                partitions.iter().map(|(p, s)| (p.to_string(), s.clone())).collect();
            let state = SyncState::from_partitions(&partitions);
            let written = serde_json::to_string(&state).unwrap();
            prop_assert_eq!(&written, &serde_json::to_string(&map).unwrap());
            prop_assert_eq!(state.json_len(), written.len());
            for p in partitions.keys() {
                prop_assert_eq!(state.get(*p), partitions.get(p));
            }
            let back: SyncState = serde_json::from_str(&written).unwrap();
            prop_assert_eq!(back, state);
        }
    }

    #[test]
    fn partition_numbers_sort_as_their_text() {
        let mut numbers = vec![
            0,
            1,
            2,
            9,
            10,
            11,
            19,
            20,
            99,
            100,
            101,
            999,
            1000,
            u32::MAX,
        ];
        numbers.sort_by_key(|p| text_order(*p));
        let mut texts: Vec<String> = numbers.iter().map(u32::to_string).collect();
        let in_order = texts.clone();
        texts.sort();
        assert_eq!(in_order, texts);
    }

    #[test]
    fn only_konsumers_spelling_of_a_number_is_kept_as_one() {
        for (key, number) in [
            ("0", Some(0)),
            ("7", Some(7)),
            ("4294967295", Some(u32::MAX)),
            ("4294967296", None),
            ("007", None),
            ("00", None),
            ("+7", None),
            ("-0", None),
            ("", None),
            ("7 ", None),
        ] {
            assert_eq!(canonical(key), number, "{key:?}");
        }
    }

    #[test]
    fn a_value_that_is_not_a_map_is_refused() {
        let err = serde_json::from_str::<SyncState>(r#"[1]"#).unwrap_err();
        assert!(
            err.to_string().contains("map of partition numbers"),
            "{err}"
        );
    }

    #[test]
    fn its_schema_is_the_maps() {
        let mut g = SchemaGenerator::default();
        assert_eq!(
            SyncState::json_schema(&mut g),
            <BTreeMap<String, PartitionState>>::json_schema(&mut SchemaGenerator::default())
        );
    }
}
