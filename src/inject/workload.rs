//! The few fields of a Pod or Deployment the webhook decides on, read straight from
//! the request body: strings borrow from the body, maps keep only the keys konsumer
//! looks at, and every other field is skipped without building a value tree.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::api::keys;

/// A string that borrows from the input when it has no escapes.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Str<'a>(pub Cow<'a, str>);

impl Str<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Str<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Str<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Str<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Str(Cow::Owned(v)))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor)
    }
}

/// A scalar map value kept as text (quantities may arrive as JSON numbers).
struct Scalar<'a>(Option<Str<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Str(Cow::Borrowed(v)))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Str(Cow::Owned(v.to_owned())))))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Str(Cow::Owned(v.to_string())))))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Str(Cow::Owned(v.to_string())))))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Str(Cow::Owned(v.to_string())))))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Str(Cow::Owned(v.to_string())))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// Keys of labels, annotations and resource lists that konsumer reads or writes.
pub(crate) fn interesting(key: &str) -> bool {
    key.starts_with("konsumerator.lwolf.org/")
        || key == keys::POD_INDEX
        || key == keys::JOB_COMPLETION_INDEX
        || key == "cpu"
        || key == "memory"
}

/// A JSON object of which only the interesting keys are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selected<'a> {
    entries: Vec<(Str<'a>, Option<Str<'a>>)>,
}

impl<'a> Selected<'a> {
    pub(crate) fn from_entries(entries: Vec<(Str<'a>, Option<Str<'a>>)>) -> Self {
        Selected { entries }
    }

    /// The value of `key` (`None` when absent or null).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev() // duplicate keys: the last one wins, as in Go's decoder
            .find(|(k, _)| k.as_str() == key)
            .and_then(|(_, v)| v.as_ref().map(Str::as_str))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Selected<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Selected<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    if interesting(key.as_str()) {
                        let value: Scalar<'de> = map.next_value()?;
                        entries.push((key, value.0));
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Selected { entries })
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Meta<'a> {
    #[serde(borrow, default)]
    pub name: Option<Str<'a>>,
    /// Set once the object is being deleted.
    #[serde(default, rename = "deletionTimestamp")]
    pub deletion_timestamp: Option<IgnoredAny>,
    #[serde(borrow, default)]
    pub labels: Option<Selected<'a>>,
    #[serde(borrow, default)]
    pub annotations: Option<Selected<'a>>,
}

impl Meta<'_> {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.as_ref().and_then(|l| l.get(key))
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref().and_then(|a| a.get(key))
    }
}

#[derive(Debug, Deserialize)]
pub struct EnvVar<'a> {
    #[serde(borrow, default)]
    pub name: Str<'a>,
    #[serde(borrow, default)]
    pub value: Option<Str<'a>>,
    #[serde(default, rename = "valueFrom")]
    pub value_from: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ResourcesView<'a> {
    #[serde(borrow, default)]
    pub requests: Option<Selected<'a>>,
    #[serde(borrow, default)]
    pub limits: Option<Selected<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct Container<'a> {
    #[serde(borrow, default)]
    pub name: Str<'a>,
    #[serde(borrow, default)]
    pub env: Option<Vec<EnvVar<'a>>>,
    #[serde(borrow, default)]
    pub resources: Option<ResourcesView<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec<'a> {
    #[serde(borrow, default)]
    pub containers: Option<Vec<Container<'a>>>,
    #[serde(borrow, default)]
    pub init_containers: Option<Vec<Container<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PodTemplate<'a> {
    #[serde(borrow, default)]
    pub metadata: Option<Meta<'a>>,
    #[serde(borrow, default)]
    pub spec: Option<PodSpec<'a>>,
}

/// The spec of a Pod (`containers`) or of a Deployment (`template`): one view
/// for both, so the object is read once whatever its kind.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec<'a> {
    #[serde(borrow, default)]
    pub containers: Option<Vec<Container<'a>>>,
    #[serde(borrow, default)]
    pub init_containers: Option<Vec<Container<'a>>>,
    #[serde(borrow, default)]
    pub template: Option<PodTemplate<'a>>,
}

/// A Pod or a Deployment.
#[derive(Debug, Default, Deserialize)]
pub struct Workload<'a> {
    #[serde(borrow, default)]
    pub metadata: Option<Meta<'a>>,
    #[serde(borrow, default)]
    pub spec: Option<WorkloadSpec<'a>>,
}

impl<'a> Workload<'a> {
    /// Reads the view out of an already parsed object (strings borrow from it).
    pub fn deserialize_from(object: &'a serde_json::Value) -> Result<Self, serde_json::Error> {
        Workload::deserialize(object)
    }
}

/// The containers of a pod spec, wherever it sits.
#[derive(Clone, Copy, Debug, Default)]
pub struct Containers<'x, 'a> {
    pub containers: Option<&'x [Container<'a>]>,
    pub init_containers: Option<&'x [Container<'a>]>,
}

impl<'a> PodSpec<'a> {
    pub fn containers(&self) -> Containers<'_, 'a> {
        Containers {
            containers: self.containers.as_deref(),
            init_containers: self.init_containers.as_deref(),
        }
    }
}

impl<'a> WorkloadSpec<'a> {
    pub fn containers(&self) -> Containers<'_, 'a> {
        Containers {
            containers: self.containers.as_deref(),
            init_containers: self.init_containers.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_borrow_unless_escaped() {
        let json =
            r#"{"name":"plain","labels":{"konsumerator.lwolf.org/consumer":"or\"ders","app":"x"}}"#;
        let meta: Meta = serde_json::from_str(json).unwrap();
        assert!(matches!(
            meta.name.as_ref().unwrap().0,
            Cow::Borrowed("plain")
        ));
        assert_eq!(meta.label(keys::CONSUMER), Some("or\"ders"));
        assert_eq!(meta.label("app"), None, "uninteresting keys are skipped");
    }

    #[test]
    fn quantities_may_be_numbers_and_nulls_are_absent() {
        let json = r#"{"requests":{"cpu":2,"memory":null,"nvidia.com/gpu":"1"}}"#;
        let r: ResourcesView = serde_json::from_str(json).unwrap();
        let req = r.requests.unwrap();
        assert_eq!(req.get("cpu"), Some("2"));
        assert_eq!(req.get("memory"), None);
    }

    #[test]
    fn env_value_from_is_detected() {
        let json =
            r#"[{"name":"A","value":"1"},{"name":"B","valueFrom":{"fieldRef":{"fieldPath":"x"}}}]"#;
        let env: Vec<EnvVar> = serde_json::from_str(json).unwrap();
        assert!(env[0].value_from.is_none());
        assert!(env[1].value_from.is_some());
        assert!(env[1].value.is_none());
    }
}
