//! `corev1.ResourceList` (`cpu`, `memory`, ... → quantity) as a small sorted
//! slice: a `BTreeMap` leaf takes ~540 bytes for the two entries a list holds,
//! and a cached Consumer holds five of them (its policy) plus its status'.
//! Shared (`Arc`): every status konsumer writes carries the instances'
//! recommendations over from the last one, two lists per container, and a
//! clone of a list was four strings to allocate and free again.
//! Reads and writes the same JSON as a map, keys in order.

use std::fmt;
use std::hash::Hasher;
use std::sync::{Arc, LazyLock};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::shared::{Content, Pool};

/// Entries sorted by name, each name once.
#[derive(Clone, Default, PartialEq)]
pub struct ResourceList(Arc<[(String, Quantity)]>);

impl ResourceList {
    pub fn new() -> Self {
        ResourceList::default()
    }

    /// Sets `name`, replacing what it had (as a map does). A shared list is
    /// copied first.
    pub fn insert(&mut self, name: String, quantity: Quantity) -> Option<Quantity> {
        let at = self.0.binary_search_by(|(k, _)| k.as_str().cmp(&name));
        if let Ok(i) = at
            && let Some(entries) = Arc::get_mut(&mut self.0)
        {
            return Some(std::mem::replace(&mut entries[i].1, quantity));
        }
        // Moved out of a list no one else holds, copied from a shared one.
        let mut entries: Vec<(String, Quantity)> = match Arc::get_mut(&mut self.0) {
            Some(own) => own.iter_mut().map(std::mem::take).collect(),
            None => self.0.to_vec(),
        };
        let previous = match at {
            Ok(i) => Some(std::mem::replace(&mut entries[i].1, quantity)),
            Err(i) => {
                entries.insert(i, (name, quantity));
                None
            }
        };
        self.0 = entries.into();
        previous
    }

    /// From entries sorted by name, each name once.
    fn from_sorted(entries: Vec<(String, Quantity)>) -> Self {
        ResourceList(entries.into())
    }

    /// Sorted by name, each name once, the last of a repeated name kept.
    fn from_entries(mut entries: Vec<(String, Quantity)>) -> Self {
        if !entries.is_sorted_by(|(a, _), (b, _)| a < b) {
            // Stable: of a repeated name, the last one stays last.
            entries.sort_by(|(a, _), (b, _)| a.cmp(b));
            let mut unique: Vec<(String, Quantity)> = Vec::with_capacity(entries.len());
            for e in entries {
                match unique.last_mut() {
                    Some(last) if last.0 == e.0 => *last = e,
                    _ => unique.push(e),
                }
            }
            entries = unique;
        }
        ResourceList::from_sorted(entries)
    }

    pub fn get(&self, name: &str) -> Option<&Quantity> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// (name, quantity) in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&String, &Quantity)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl ExactSizeIterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }

    /// Makes this list the one copy of its entries that every list kept with
    /// [`ResourceList::share`] holds ([`super::shared`]).
    pub fn share(&mut self) {
        static POOL: LazyLock<Pool<[(String, Quantity)]>> = LazyLock::new(Pool::default);
        POOL.share(&mut self.0);
    }

    /// Whether both hold the same copy of their entries.
    pub fn shares_with(&self, other: &ResourceList) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Content for [(String, Quantity)] {
    fn hash_content(&self, h: &mut impl Hasher) {
        h.write_usize(self.len());
        for (k, v) in self {
            h.write(k.as_bytes());
            h.write_u8(0xff);
            h.write(v.0.as_bytes());
            h.write_u8(0xff);
        }
    }

    fn same_content(&self, other: &Self) -> bool {
        self == other
    }
}

impl FromIterator<(String, Quantity)> for ResourceList {
    fn from_iter<I: IntoIterator<Item = (String, Quantity)>>(iter: I) -> Self {
        ResourceList::from_entries(iter.into_iter().collect())
    }
}

impl<const N: usize> From<[(String, Quantity); N]> for ResourceList {
    fn from(entries: [(String, Quantity); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a ResourceList {
    type Item = (&'a String, &'a Quantity);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, Quantity)>,
        fn(&'a (String, Quantity)) -> (&'a String, &'a Quantity),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

/// `list["cpu"]`, as on a map: panics when the name is missing.
impl std::ops::Index<&str> for ResourceList {
    type Output = Quantity;

    fn index(&self, name: &str) -> &Quantity {
        match self.get(name) {
            Some(q) => q,
            None => panic!("no {name:?} in the resource list"),
        }
    }
}

impl fmt::Debug for ResourceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for ResourceList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ResourceList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = ResourceList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of resource names to quantities")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(2).min(16));
                while let Some(entry) = map.next_entry::<String, Quantity>()? {
                    entries.push(entry);
                }
                Ok(ResourceList::from_entries(entries))
            }
        }
        deserializer.deserialize_map(ListVisitor)
    }
}

impl JsonSchema for ResourceList {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        <std::collections::BTreeMap<String, Quantity>>::schema_name()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        <std::collections::BTreeMap<String, Quantity>>::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    #[test]
    fn it_reads_and_writes_the_json_a_map_does() {
        for text in [
            r#"{"memory":"1Gi","cpu":"500m"}"#,
            r#"{}"#,
            r#"{"cpu":"1","cpu":"2"}"#,
            r#"{"nvidia.com/gpu":"1","cpu":2,"memory":"64Mi"}"#,
        ] {
            let map: BTreeMap<String, Quantity> = serde_json::from_str(text).unwrap();
            let list: ResourceList = serde_json::from_str(text).unwrap();
            assert_eq!(
                serde_json::to_string(&list).unwrap(),
                serde_json::to_string(&map).unwrap(),
                "{text}"
            );
            assert_eq!(list.len(), map.len());
            for (k, v) in &map {
                assert_eq!(list.get(k), Some(v), "{text}");
            }
            let yaml = serde_saphyr::to_string(&map).unwrap();
            let from_yaml: ResourceList = serde_saphyr::from_str(&yaml).unwrap();
            assert_eq!(from_yaml, list, "{yaml}");
        }
    }

    #[test]
    fn insert_keeps_names_sorted_and_unique() {
        let mut list = ResourceList::new();
        assert_eq!(list.insert("memory".into(), q("1Gi")), None);
        assert_eq!(list.insert("cpu".into(), q("1")), None);
        assert_eq!(list.insert("cpu".into(), q("2")), Some(q("1")));
        assert_eq!(list.keys().collect::<Vec<_>>(), ["cpu", "memory"]);
        assert_eq!(list.get("cpu"), Some(&q("2")));
        assert!(!list.contains_key("gpu"));
        let same: ResourceList = [("memory".to_string(), q("1Gi")), ("cpu".into(), q("2"))].into();
        assert_eq!(list, same);
    }

    #[test]
    fn a_clone_shares_its_entries_until_one_of_them_changes() {
        let mut list: ResourceList =
            [("cpu".to_string(), q("1")), ("memory".into(), q("1Gi"))].into();
        let copy = list.clone();
        assert!(Arc::ptr_eq(&list.0, &copy.0));
        assert_eq!(list.insert("cpu".into(), q("2")), Some(q("1")));
        assert_eq!(list.insert("gpu".into(), q("1")), None);
        assert_eq!(copy.get("cpu"), Some(&q("1")));
        assert!(!copy.contains_key("gpu"));
        assert_eq!(list.keys().collect::<Vec<_>>(), ["cpu", "gpu", "memory"]);
        assert_eq!(list.get("cpu"), Some(&q("2")));
    }

    #[test]
    fn collecting_keeps_the_last_of_a_repeated_name() {
        let list: ResourceList = [
            ("memory".to_string(), q("1Gi")),
            ("cpu".into(), q("1")),
            ("memory".into(), q("2Gi")),
            ("cpu".into(), q("2")),
        ]
        .into();
        assert_eq!(list.keys().collect::<Vec<_>>(), ["cpu", "memory"]);
        assert_eq!(
            (list["cpu"].0.as_str(), list["memory"].0.as_str()),
            ("2", "2Gi")
        );
    }

    #[test]
    fn a_list_that_is_not_a_map_is_refused() {
        let err = serde_json::from_str::<ResourceList>(r#"["cpu"]"#).unwrap_err();
        assert!(err.to_string().contains("map of resource names"), "{err}");
    }

    #[test]
    fn its_schema_is_the_maps() {
        let mut g = SchemaGenerator::default();
        assert_eq!(
            ResourceList::json_schema(&mut g),
            <BTreeMap<String, Quantity>>::json_schema(&mut SchemaGenerator::default())
        );
    }
}
