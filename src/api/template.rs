//! `spec.deploymentTemplate`, held as its JSON text.
//!
//! A `serde_json::Value` tree of the orders example's template takes ~5.7 KB of
//! `BTreeMap` nodes in every cached Consumer (most of a Consumer's memory at
//! 10,000 of them, BENCHMARKS.md); its compact text takes ~250 bytes. konsumer
//! reads the template rarely (building a managed Deployment, a container name),
//! so it is parsed when read. It serializes as the same JSON object and has the
//! same CRD schema (an opaque object, `schema::opaque_object`).

use std::fmt;
use std::sync::{Arc, LazyLock};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use super::shared::Pool;

/// The name serde_json gives its raw-value requests: from its own deserializers
/// (text and `Value`) the template is then handed over as JSON text, with no
/// tree built. Other deserializers (YAML) go through a `Value`.
pub(crate) const RAW_TOKEN: &str = "$serde_json::private::RawValue";

/// Any JSON value (as before, the type accepts what the schema check refuses:
/// the validating webhook words that), kept as compact JSON text.
/// Shared: a clone of the spec (each status write made one) copies no text.
#[derive(Clone)]
pub struct DeploymentTemplate(Arc<str>);

impl DeploymentTemplate {
    /// The template as a JSON tree (parsed on each call).
    pub fn to_value(&self) -> Value {
        // The text was written by serde_json or checked by it on the way in.
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }

    /// Makes this template the one copy of its text that every template kept
    /// with `share` holds ([`super::shared`]).
    pub fn share(&mut self) {
        static POOL: LazyLock<Pool<str>> = LazyLock::new(Pool::default);
        POOL.share(&mut self.0);
    }

    /// Whether both hold the same copy of their text.
    pub fn shares_with(&self, other: &DeploymentTemplate) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The compact JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The names in `template.spec.containers` (those that are strings), in
    /// order; `None` when that is not a list. Read without building the tree,
    /// which the reconciler would otherwise do for every Consumer it reconciles.
    pub fn container_names(&self) -> Option<Vec<String>> {
        #[derive(Deserialize)]
        struct Template {
            template: Option<Pod>,
        }
        #[derive(Deserialize)]
        struct Pod {
            spec: Option<PodSpec>,
        }
        #[derive(Deserialize)]
        struct PodSpec {
            containers: Option<Vec<Container>>,
        }
        #[derive(Deserialize)]
        struct Container {
            name: Option<Value>,
        }
        let names = |containers: Vec<Container>| {
            containers
                .into_iter()
                .filter_map(|c| match c.name {
                    Some(Value::String(name)) => Some(name),
                    _ => None,
                })
                .collect()
        };
        match serde_json::from_str::<Template>(&self.0) {
            Ok(t) => t.template?.spec?.containers.map(names),
            // Anything unusual (a part that is not an object, a repeated key):
            // read as a tree, as everything else reads it.
            Err(_) => self
                .to_value()
                .pointer("/template/spec/containers")?
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter_map(|c| c.get("name")?.as_str().map(String::from))
                        .collect()
                }),
        }
    }
}

impl From<&Value> for DeploymentTemplate {
    fn from(value: &Value) -> Self {
        DeploymentTemplate(value.to_string().into())
    }
}

impl From<Value> for DeploymentTemplate {
    fn from(value: Value) -> Self {
        DeploymentTemplate::from(&value)
    }
}

impl PartialEq for DeploymentTemplate {
    fn eq(&self, other: &Self) -> bool {
        // The same object may be written in another key order or spacing.
        self.0 == other.0 || self.to_value() == other.to_value()
    }
}

impl fmt::Debug for DeploymentTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DeploymentTemplate").field(&self.0).finish()
    }
}

impl Serialize for DeploymentTemplate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Through a tree, so that every serializer (YAML too) writes an object.
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for DeploymentTemplate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_newtype_struct(RAW_TOKEN, TemplateVisitor)
    }
}

/// Raw text from serde_json kept as it came, unless it is spread over lines
/// (a pretty-printed file): JSON escapes line breaks and tabs inside strings,
/// so any found are whitespace between tokens.
fn from_raw<E: de::Error>(raw: &str) -> Result<DeploymentTemplate, E> {
    if raw.bytes().any(|b| matches!(b, b'\n' | b'\r' | b'\t')) {
        let value: Value = serde_json::from_str(raw).map_err(E::custom)?;
        return Ok(DeploymentTemplate::from(&value));
    }
    Ok(DeploymentTemplate(raw.into()))
}

struct TemplateVisitor;

impl<'de> Visitor<'de> for TemplateVisitor {
    type Value = DeploymentTemplate;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a DeploymentSpec object")
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Value::deserialize(d).map(DeploymentTemplate::from)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Ok(DeploymentTemplate("{}".into()));
        };
        if first == RAW_TOKEN {
            return map.next_value_seed(RawText);
        }
        // A deserializer that ignored the raw request: an ordinary map.
        let mut object = Map::new();
        object.insert(first, map.next_value()?);
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            object.insert(k, v);
        }
        Ok(DeploymentTemplate::from(&Value::Object(object)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element::<Value>()? {
            items.push(v);
        }
        Ok(DeploymentTemplate::from(&Value::Array(items)))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Value::Bool(v).into())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Value::from(v).into())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Value::from(v).into())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Value::from(v).into())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Value::from(v).into())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Value::Null.into())
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Value::Null.into())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Value::deserialize(d).map(DeploymentTemplate::from)
    }
}

/// The raw JSON text serde_json hands over (borrowed from the input, or owned
/// when read from a `Value`).
struct RawText;

impl<'de> DeserializeSeed<'de> for RawText {
    type Value = DeploymentTemplate;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for RawText {
    type Value = DeploymentTemplate;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON text")
    }

    fn visit_str<E: de::Error>(self, raw: &str) -> Result<Self::Value, E> {
        from_raw(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn orders_template() -> Value {
        json!({"replicas": 1, "selector": {"matchLabels": {"app": "orders"}},
            "template": {"metadata": {"labels": {"app": "orders"}},
                "spec": {"containers": [{"name": "consumer", "image": "r/orders:1.4.2"}]}}})
    }

    #[test]
    fn json_text_yaml_and_value_read_into_the_same_template() {
        let v = orders_template();
        let from_text: DeploymentTemplate = serde_json::from_str(&v.to_string()).unwrap();
        let from_value: DeploymentTemplate = serde_json::from_value(v.clone()).unwrap();
        let yaml = serde_saphyr::to_string(&v).unwrap();
        let from_yaml: DeploymentTemplate = serde_saphyr::from_str(&yaml).unwrap();
        for t in [&from_text, &from_value, &from_yaml] {
            assert_eq!(t.to_value(), v);
        }
        assert_eq!(from_text, from_yaml);
    }

    #[test]
    fn serde_json_hands_the_text_over_without_a_tree() {
        // Key order kept (a tree would sort the keys): the raw path was taken.
        let text = r#"{"template":{},"replicas":2}"#;
        let t: DeploymentTemplate = serde_json::from_str(text).unwrap();
        assert_eq!(t.as_str(), text);
        let inside: crate::api::ConsumerSpec =
            serde_json::from_str(&format!(r#"{{"deploymentTemplate":{text}}}"#)).unwrap();
        assert_eq!(inside.deployment_template.unwrap().as_str(), text);
    }

    #[test]
    fn a_pretty_printed_template_is_kept_compact() {
        let v = orders_template();
        let pretty = serde_json::to_string_pretty(&v).unwrap();
        let t: DeploymentTemplate = serde_json::from_str(&pretty).unwrap();
        assert!(!t.as_str().contains('\n'), "{}", t.as_str());
        assert_eq!(t.to_value(), v);
    }

    #[test]
    fn it_serializes_as_the_same_object_for_json_and_yaml() {
        let v = orders_template();
        let t = DeploymentTemplate::from(&v);
        assert_eq!(serde_json::to_value(&t).unwrap(), v);
        let back: Value = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, v);
        let yaml: Value = serde_saphyr::from_str(&serde_saphyr::to_string(&t).unwrap()).unwrap();
        assert_eq!(yaml, v);
    }

    #[test]
    fn templates_that_differ_only_in_key_order_or_spacing_are_equal() {
        let a: DeploymentTemplate = serde_json::from_str(r#"{"a":1,"b":[2]}"#).unwrap();
        let b: DeploymentTemplate = serde_json::from_str(r#"{"b": [2], "a": 1}"#).unwrap();
        let c: DeploymentTemplate = serde_json::from_str(r#"{"a":1,"b":[3]}"#).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn values_that_are_not_objects_are_kept_for_the_validator_to_word() {
        for v in [json!(42), json!("x"), json!([1, {"a": null}]), json!(true)] {
            let from_text: DeploymentTemplate = serde_json::from_str(&v.to_string()).unwrap();
            let yaml = serde_saphyr::to_string(&v).unwrap();
            let from_yaml: DeploymentTemplate = serde_saphyr::from_str(&yaml).unwrap();
            assert_eq!(from_text.to_value(), v);
            assert_eq!(from_yaml.to_value(), v, "{yaml}");
        }
    }

    #[test]
    fn container_names_read_without_a_tree_agree_with_the_tree() {
        for v in [
            orders_template(),
            json!({"template": {"spec": {"containers": [{"name": "a"}, {"name": 5}, {}, {"name": "b"}]}}}),
            json!({"template": {"spec": {"containers": {"name": "a"}}}}),
            json!({"template": {"spec": {"containers": null}}}),
            json!({"template": "x"}),
            json!({"template": {"spec": 3}}),
            json!({"template": {"spec": {"containers": ["a", {"name": "b"}]}}}),
            json!([]),
            json!({}),
        ] {
            let from_tree = v
                .pointer("/template/spec/containers")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(|c| c.get("name")?.as_str().map(String::from))
                        .collect::<Vec<_>>()
                });
            assert_eq!(
                DeploymentTemplate::from(&v).container_names(),
                from_tree,
                "{v}"
            );
        }
        // A repeated key: the last one counts, as in the tree.
        let t: DeploymentTemplate = serde_json::from_str(
            r#"{"template":{"spec":{"containers":[{"name":"a"}]},"spec":{"containers":[{"name":"b"}]}}}"#,
        )
        .unwrap();
        assert_eq!(t.container_names(), Some(vec!["b".to_string()]));
    }

    #[test]
    fn malformed_json_is_refused_with_where_it_broke() {
        let err = serde_json::from_str::<DeploymentTemplate>(r#"{"a":}"#).unwrap_err();
        assert!(err.to_string().contains("column"), "{err}");
    }
}
