//! Type checks against the CRD's structural schema, with the apiserver's semantics
//! (not JSON Schema's): non-nullable nulls are pruned (absent), `int-or-string`,
//! `preserve-unknown-fields`, unknown fields are warnings (kubectl's default
//! `fieldValidation=Warn`). Offline this gives `konsumer validate` the answers the
//! apiserver would give before any webhook runs.

use std::sync::LazyLock;

use serde::de::DeserializeSeed;
use serde_json::Value;

use super::field::{FieldError, FieldPath, Report};

mod checked;

/// The `openAPIV3Schema` of the generated CRD (the storage version).
pub static CONSUMER_SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    let crd = crate::api::crd::consumer_crd();
    crd.spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null)
});

/// The schema of `spec`, borrowed (a clone per request cost more than the check).
fn spec_schema() -> &'static Value {
    CONSUMER_SCHEMA
        .pointer("/properties/spec")
        .unwrap_or(&Value::Null)
}

/// The spec and metadata of a Consumer that [`check_consumer`] would pass
/// unchanged (no error, no warning, nothing pruned), borrowed; `None` when it would
/// report or clean anything, or when `metadata` or `spec` is missing.
pub fn unchanged_parts(object: &Value) -> Option<(&Value, &Value)> {
    let obj = object.as_object()?;
    let spec = obj.get("spec")?;
    let meta = obj.get("metadata")?;
    let meta_map = meta.as_object()?;
    let strings = ["name", "namespace", "generateName"].iter().all(|key| {
        meta_map
            .get(*key)
            .is_none_or(|v| v.is_string() || v.is_null())
    });
    let maps = ["labels", "annotations"]
        .iter()
        .all(|key| match meta_map.get(*key) {
            None | Some(Value::Null) => true,
            Some(Value::Object(entries)) => entries.values().all(Value::is_string),
            Some(_) => false,
        });
    (strings && maps && conforms(&SPEC_COMPILED, spec)).then_some((meta, spec))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_error(path: &FieldPath, value: &Value, expected: &str) -> FieldError {
    FieldError::invalid(
        path.clone(),
        value,
        format!(
            "{path} in body must be of type {expected}: {:?}",
            type_name(value)
        ),
    )
}

/// A value of the schema's type, standing in for an invalid array item so that
/// the items after it keep their index.
fn placeholder(schema: &Value) -> Value {
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return Value::String("0".into());
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("array") => Value::Array(Vec::new()),
        Some("string") => Value::String(String::new()),
        Some("integer") | Some("number") => Value::from(0),
        Some("boolean") => Value::Bool(false),
        _ => Value::Object(Default::default()),
    }
}

/// Checks `value` (at `path`) against `schema`. Returns the value with everything
/// invalid removed (`None`: drop the field), for the semantic rules to read.
pub fn check(
    schema: &Value,
    value: &Value,
    path: &FieldPath,
    report: &mut Report,
) -> Option<Value> {
    if value.is_null() {
        // Nulls of non-nullable fields are pruned by the apiserver: absent.
        return None;
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !matches!(type_name(value), "integer" | "string") {
            report.error(FieldError::invalid(
                path.clone(),
                value,
                format!(
                    "{path} in body must be of type integer or string: {:?}",
                    type_name(value)
                ),
            ));
            return None;
        }
        return Some(value.clone());
    }
    let expected = schema.get("type").and_then(Value::as_str);
    match expected {
        Some("object") => {
            let Some(map) = value.as_object() else {
                report.error(type_error(path, value, "object"));
                return None;
            };
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let preserve =
                schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(name) = required.as_str()
                    && map.get(name).is_none_or(Value::is_null)
                {
                    report.error(FieldError::required(path.child(name), ""));
                }
            }
            let mut cleaned = serde_json::Map::new();
            for (key, child) in map {
                let kept = if let Some(sub) = properties.and_then(|p| p.get(key)) {
                    check(sub, child, &path.child(key), report)
                } else if let Some(sub) = additional {
                    check(sub, child, &path.key(key), report)
                } else if preserve {
                    Some(child.clone())
                } else {
                    report.warn(format!("unknown field \"{}\"", path.child(key)));
                    None
                };
                if let Some(v) = kept {
                    cleaned.insert(key.clone(), v);
                }
            }
            Some(Value::Object(cleaned))
        }
        Some("array") => {
            let Some(items) = value.as_array() else {
                report.error(type_error(path, value, "array"));
                return None;
            };
            let item_schema = schema.get("items").unwrap_or(&Value::Null);
            let cleaned = items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    check(item_schema, item, &path.index(i), report)
                        .unwrap_or_else(|| placeholder(item_schema))
                })
                .collect();
            Some(Value::Array(cleaned))
        }
        Some("string") => {
            if !value.is_string() {
                report.error(type_error(path, value, "string"));
                return None;
            }
            check_enum(schema, value, path, report).then(|| value.clone())
        }
        Some("integer") => {
            let fits = match schema.get("format").and_then(Value::as_str) {
                Some("int32") => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
                _ => value.as_i64().is_some(),
            };
            if type_name(value) != "integer" {
                report.error(type_error(path, value, "integer"));
                None
            } else if !fits {
                report.error(FieldError::invalid(path.clone(), value, "out of range"));
                None
            } else {
                Some(value.clone())
            }
        }
        Some("number") => value.is_number().then(|| value.clone()).or_else(|| {
            report.error(type_error(path, value, "number"));
            None
        }),
        Some("boolean") => value.is_boolean().then(|| value.clone()).or_else(|| {
            report.error(type_error(path, value, "boolean"));
            None
        }),
        _ => Some(value.clone()),
    }
}

/// A schema node with its keywords looked up once: [`conforms`] runs on every
/// request, and a keyword lookup in the schema's maps per field cost more than
/// the check itself.
#[derive(Debug)]
pub struct Compiled {
    int_or_string: bool,
    /// `type`; `None` also for a type name the checks do not know (they take
    /// anything then, as for no type).
    kind: Option<Type>,
    /// `properties`, in a list: an object's keys are found by comparing each
    /// name (most differ in length, which is compared first), and a property's
    /// place is the bit that marks it seen ([`KeySet`]).
    properties: Option<Vec<(String, Compiled)>>,
    additional: Option<Box<Compiled>>,
    preserve: bool,
    required: Vec<String>,
    /// The required properties among the first 64, as bits of their places.
    required_bits: u64,
    /// The other required names (further properties, or kept unknown fields).
    required_rest: Vec<String>,
    items: Option<Box<Compiled>>,
    allowed: Option<Vec<Value>>,
    int32: bool,
}

/// The `type`s the checks tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Type {
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
}

impl Type {
    fn of(name: &str) -> Option<Type> {
        Some(match name {
            "object" => Type::Object,
            "array" => Type::Array,
            "string" => Type::String,
            "integer" => Type::Integer,
            "number" => Type::Number,
            "boolean" => Type::Boolean,
            _ => return None,
        })
    }
}

/// Places of properties that have a bit in [`KeySet`] and `required_bits`.
const BITS: usize = 64;

impl Compiled {
    pub fn new(schema: &Value) -> Self {
        let properties: Option<Vec<(String, Compiled)>> = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| {
                p.iter()
                    .map(|(k, v)| (k.clone(), Compiled::new(v)))
                    .collect()
            });
        let required: Vec<String> = schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect();
        let place = |name: &str| {
            properties
                .as_ref()
                .and_then(|p| p.iter().position(|(k, _)| k == name))
                .filter(|&i| i < BITS)
        };
        let required_bits = required
            .iter()
            .filter_map(|r| place(r))
            .fold(0, |bits, i| bits | 1 << i);
        let required_rest = required
            .iter()
            .filter(|r| place(r).is_none())
            .cloned()
            .collect();
        Compiled {
            int_or_string: schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)),
            kind: schema
                .get("type")
                .and_then(Value::as_str)
                .and_then(Type::of),
            properties,
            additional: schema
                .get("additionalProperties")
                .filter(|a| a.is_object())
                .map(|a| Box::new(Compiled::new(a))),
            preserve: schema.get("x-kubernetes-preserve-unknown-fields")
                == Some(&Value::Bool(true)),
            required,
            required_bits,
            required_rest,
            items: schema.get("items").map(|i| Box::new(Compiled::new(i))),
            allowed: schema.get("enum").and_then(Value::as_array).cloned(),
            int32: schema.get("format").and_then(Value::as_str) == Some("int32"),
        }
    }

    /// The place and schema of the property `key`.
    fn property(&self, key: &str) -> Option<(usize, &Compiled)> {
        self.properties
            .as_deref()?
            .iter()
            .enumerate()
            .find_map(|(i, (name, sub))| (name == key).then_some((i, sub)))
    }
}

/// The schema without keywords.
static ANY: Compiled = Compiled {
    int_or_string: false,
    kind: None,
    properties: None,
    additional: None,
    preserve: false,
    required: Vec::new(),
    required_bits: 0,
    required_rest: Vec::new(),
    items: None,
    allowed: None,
    int32: false,
};

/// The spec schema, compiled for [`conforms`].
static SPEC_COMPILED: LazyLock<Compiled> = LazyLock::new(|| Compiled::new(spec_schema()));

/// Whether [`check`] would report nothing and return `value` unchanged (no error,
/// no warning, nothing pruned): the common case, which then needs no cleaned copy.
/// Mirrors `check` branch for branch; the differential tests in
/// `validation::tests` hold the two together.
pub fn conforms(schema: &Compiled, value: &Value) -> bool {
    if value.is_null() {
        return false;
    }
    if schema.int_or_string {
        return matches!(type_name(value), "integer" | "string");
    }
    match schema.kind {
        Some(Type::Object) => {
            let Some(map) = value.as_object() else {
                return false;
            };
            schema
                .required
                .iter()
                .all(|name| map.get(name).is_some_and(|v| !v.is_null()))
                && map.iter().all(|(key, child)| {
                    if let Some((_, sub)) = schema.property(key) {
                        conforms(sub, child)
                    } else if let Some(sub) = &schema.additional {
                        conforms(sub, child)
                    } else {
                        schema.preserve
                    }
                })
        }
        Some(Type::Array) => {
            let Some(items) = value.as_array() else {
                return false;
            };
            // `check` reads a missing `items` as the null schema: anything but null.
            let item_schema = schema.items.as_deref().unwrap_or(&ANY);
            items.iter().all(|item| conforms(item_schema, item))
        }
        Some(Type::String) => {
            value.is_string()
                && schema
                    .allowed
                    .as_ref()
                    .is_none_or(|allowed| allowed.contains(value))
        }
        Some(Type::Integer) => {
            type_name(value) == "integer"
                && if schema.int32 {
                    value.as_i64().is_some_and(|n| i32::try_from(n).is_ok())
                } else {
                    value.as_i64().is_some()
                }
        }
        Some(Type::Number) => value.is_number(),
        Some(Type::Boolean) => value.is_boolean(),
        None => true,
    }
}

/// [`conforms`] of the spec schema on the JSON text of a spec, without a `Value`
/// tree: `false` also for text serde_json would not read, and for a key given
/// twice (a `Value` keeps the last one; the caller then reads it that way).
pub fn spec_conforms_json(text: &str) -> bool {
    conforms_json(&SPEC_COMPILED, text)
}

/// [`conforms`] of `schema` on JSON text (see [`spec_conforms_json`]).
fn conforms_json(schema: &Compiled, text: &str) -> bool {
    let mut de = serde_json::Deserializer::from_str(text);
    Conform(schema).deserialize(&mut de).is_ok() && de.end().is_ok()
}

/// The typed spec of a spec's JSON text that [`check`] passes unchanged, in one
/// pass: the schema is checked on the typed read's own parser events. What
/// [`spec_conforms_json`] and then `serde_json::from_str` give, without reading
/// the text twice; `None` when either would refuse it.
pub fn read_conforming_spec(text: &str) -> Option<crate::api::ConsumerSpec> {
    checked::read(&SPEC_COMPILED, text)
}

/// [`conforms`] as a visitor of the parser's events: a value that does not conform
/// is an error, which also stops the parse.
struct Conform<'s>(&'s Compiled);

/// A scalar as [`type_name`] tells them apart.
enum Scalar<'v> {
    Bool,
    Int(Option<i64>),
    Float,
    Str(&'v str),
}

impl Compiled {
    /// Whether a scalar conforms to this node: [`conforms`]' scalar branches.
    fn takes_scalar(&self, value: Scalar<'_>) -> bool {
        if self.int_or_string {
            return matches!(value, Scalar::Int(_) | Scalar::Str(_));
        }
        match (self.kind, value) {
            (Some(Type::Object | Type::Array), _) => false,
            (Some(Type::String), Scalar::Str(s)) => self
                .allowed
                .as_ref()
                .is_none_or(|allowed| allowed.iter().any(|a| a.as_str() == Some(s))),
            (Some(Type::String), _) => false,
            (Some(Type::Integer), Scalar::Int(n)) => {
                if self.int32 {
                    n.is_some_and(|n| i32::try_from(n).is_ok())
                } else {
                    n.is_some()
                }
            }
            (Some(Type::Integer), _) => false,
            (Some(Type::Number), v) => matches!(v, Scalar::Int(_) | Scalar::Float),
            (Some(Type::Boolean), v) => matches!(v, Scalar::Bool),
            (None, _) => true,
        }
    }

    /// Whether containers of `kind` (an object or an array) conform at all
    /// (`int-or-string` and the scalar types take none).
    fn takes_container(&self, kind: Type) -> bool {
        !self.int_or_string
            && match self.kind {
                Some(k) => k == kind,
                None => true,
            }
    }

    /// The schema of an array's items (`check` reads a missing `items` as the
    /// null schema: anything but null); `None` when this node is not an array
    /// type, whose items are then not looked into.
    fn item_schema(&self) -> Option<&Compiled> {
        (self.kind == Some(Type::Array)).then(|| self.items.as_deref().unwrap_or(&ANY))
    }

    /// Whether this node's objects are looked into (an object type); any other
    /// node that takes objects takes them whole.
    fn is_object(&self) -> bool {
        self.kind == Some(Type::Object)
    }

    /// What the value of `key` in an object of this type is checked against,
    /// given its place among the properties (`None`: not a property).
    fn field<'s>(&'s self, key: &str, property: Option<&'s Compiled>) -> Field<'s> {
        if let Some(sub) = property {
            Field::Schema(sub)
        } else if let Some(sub) = &self.additional {
            Field::Schema(sub)
        } else if self.preserve {
            Field::Preserved {
                required: self.required.iter().any(|r| r == key),
            }
        } else {
            Field::Unknown
        }
    }
}

/// The keys of one object read so far, to refuse a key given twice and to find
/// the required ones: a bit per property (most keys), a list of the others
/// (map entries, kept unknown fields), which allocates only when one comes.
#[derive(Default)]
struct KeySet<'de> {
    properties: u64,
    others: Vec<std::borrow::Cow<'de, str>>,
}

impl<'de> KeySet<'de> {
    /// Adds `key` of an object of `schema`: what its value is checked against,
    /// `None` when the key was there already.
    fn add<'s>(
        &mut self,
        schema: &'s Compiled,
        key: std::borrow::Cow<'de, str>,
    ) -> Option<Field<'s>> {
        let property = schema.property(&key);
        match property {
            Some((i, sub)) if i < BITS => {
                let bit = 1u64 << i;
                if self.properties & bit != 0 {
                    return None;
                }
                self.properties |= bit;
                Some(Field::Schema(sub))
            }
            _ => {
                if self.others.contains(&key) {
                    return None;
                }
                let field = schema.field(&key, property.map(|(_, sub)| sub));
                self.others.push(key);
                Some(field)
            }
        }
    }

    /// Whether every field `schema` requires was read.
    fn has_required(&self, schema: &Compiled) -> bool {
        self.properties & schema.required_bits == schema.required_bits
            && schema
                .required_rest
                .iter()
                .all(|r| self.others.iter().any(|k| k == r))
    }
}

/// The value of an object's field, to [`conforms`].
enum Field<'s> {
    Schema(&'s Compiled),
    /// Kept as it is (`x-kubernetes-preserve-unknown-fields`): anything, and not
    /// null when required.
    Preserved {
        required: bool,
    },
    /// Neither a property nor allowed: `check` warns and drops it.
    Unknown,
}

impl Conform<'_> {
    fn scalar<E: serde::de::Error>(&self, value: Scalar<'_>) -> Result<(), E> {
        if self.0.takes_scalar(value) {
            Ok(())
        } else {
            Err(E::custom(""))
        }
    }

    fn container<E: serde::de::Error>(&self, kind: Type) -> Result<(), E> {
        if self.0.takes_container(kind) {
            Ok(())
        } else {
            Err(E::custom(""))
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Conform<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Conform<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a value of the schema")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        // `check` prunes nulls: not unchanged.
        Err(E::custom(""))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar(Scalar::Bool)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(Scalar::Int(Some(v)))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(Scalar::Int(i64::try_from(v).ok()))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar(Scalar::Float)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(Scalar::Str(v))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.container(Type::Array)?;
        let Some(item) = self.0.item_schema() else {
            // No type: anything but null, and nothing is looked into.
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        while seq.next_element_seed(Conform(item))?.is_some() {}
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error;
        self.container(Type::Object)?;
        let schema = self.0;
        if !schema.is_object() {
            // No type: anything but null, and nothing is looked into.
            while map.next_key::<serde::de::IgnoredAny>()?.is_some() {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
            return Ok(());
        }
        let mut seen = KeySet::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match seen.add(schema, key.0) {
                Some(Field::Schema(sub)) => map.next_value_seed(Conform(sub))?,
                Some(Field::Preserved { required }) => {
                    let value = map.next_value::<Option<serde::de::IgnoredAny>>()?;
                    if value.is_none() && required {
                        return Err(A::Error::custom(""));
                    }
                }
                // Unknown, or given twice.
                Some(Field::Unknown) | None => return Err(A::Error::custom("")),
            }
        }
        // Every value seen is not null (or the parse stopped), so present is enough.
        if seen.has_required(schema) {
            Ok(())
        } else {
            Err(A::Error::custom(""))
        }
    }
}

/// A map key, borrowed from the text when it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// `false` (and an error) when the value is not one of the schema's `enum`.
fn check_enum(schema: &Value, value: &Value, path: &FieldPath, report: &mut Report) -> bool {
    let Some(allowed) = schema.get("enum").and_then(Value::as_array) else {
        return true;
    };
    if allowed.contains(value) {
        return true;
    }
    let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
    report.error(FieldError::not_supported(path.clone(), value, &names));
    false
}

/// Checks a whole Consumer object: `spec` against the schema (metadata and status
/// are the apiserver's business). Returns the object with invalid fields removed.
pub fn check_consumer(object: &Value, report: &mut Report) -> Value {
    let Some(obj) = object.as_object() else {
        report.error(FieldError::invalid(
            FieldPath::root("<root>"),
            object,
            "a Consumer must be an object",
        ));
        return Value::Object(Default::default());
    };
    let mut cleaned = obj.clone();
    cleaned.remove("status");
    match obj.get("spec") {
        None | Some(Value::Null) => {
            report.error(FieldError::required(FieldPath::root("spec"), ""));
            cleaned.remove("spec");
        }
        Some(spec) => match check(spec_schema(), spec, &FieldPath::root("spec"), report) {
            Some(v) => {
                cleaned.insert("spec".into(), v);
            }
            None => {
                cleaned.remove("spec");
            }
        },
    }
    match obj.get("metadata") {
        Some(Value::Object(meta)) => {
            let meta = check_metadata(meta, report);
            cleaned.insert("metadata".into(), Value::Object(meta));
        }
        None | Some(Value::Null) => {
            cleaned.remove("metadata");
        }
        Some(other) => {
            report.error(FieldError::invalid(
                FieldPath::root("metadata"),
                other,
                "must be an object",
            ));
            cleaned.remove("metadata");
        }
    }
    Value::Object(cleaned)
}

/// Why a metadata value must be a string, with the YAML 1.1 trap named when the
/// value is a boolean (`name: n` reads as `false`).
fn must_be_string(value: &Value) -> String {
    if value.is_boolean() {
        "must be a string: YAML reads unquoted y, n, yes, no, on, off, true and false as \
         booleans; quote the value"
            .into()
    } else {
        "must be a string".into()
    }
}

/// The metadata fields konsumer reads, type-checked with their own field paths
/// (a wrong one is reported where it is, not as an unreadable `metadata`);
/// invalid ones are removed.
fn check_metadata(
    meta: &serde_json::Map<String, Value>,
    report: &mut Report,
) -> serde_json::Map<String, Value> {
    let mut meta = meta.clone();
    let path = FieldPath::root("metadata");
    for key in ["name", "namespace", "generateName"] {
        if let Some(v) = meta.get(key).filter(|v| !v.is_string() && !v.is_null()) {
            report.error(FieldError::invalid(path.child(key), v, must_be_string(v)));
            meta.remove(key);
        }
    }
    for map in ["labels", "annotations"] {
        match meta.get_mut(map) {
            None | Some(Value::Null) => {}
            Some(Value::Object(entries)) => {
                let bad: Vec<String> = entries
                    .iter()
                    .filter(|(_, v)| !v.is_string())
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in bad {
                    if let Some(v) = entries.remove(&k) {
                        report.error(FieldError::invalid(
                            path.child(map).key(&k),
                            &v,
                            must_be_string(&v),
                        ));
                    }
                }
            }
            Some(other) => {
                report.error(FieldError::invalid(
                    path.child(map),
                    other,
                    "must be a map of strings",
                ));
                meta.remove(map);
            }
        }
    }
    meta
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors_of(object: Value) -> (Vec<String>, Vec<String>) {
        let mut r = Report::default();
        let _ = check_consumer(&object, &mut r);
        (r.errors.iter().map(|e| e.to_string()).collect(), r.warnings)
    }

    #[test]
    fn type_errors_and_missing_required_fields_are_all_reported() {
        let (errors, warnings) = errors_of(json!({"spec": {
            "numPartitions": "ten",
            "name": 5,
            "autoscaler": {"prometheus": {"ratePerCore": 1.5}},
            "resourcePolicy": {"containerPolicies": [{"containerName": "c", "minAllowed": {"cpu": true}}]},
            "deploymentTemplate": [],
            "bogus": 1
        }}));
        let joined = errors.join("\n");
        for expected in [
            "spec.numPartitions: Invalid value: \"ten\": spec.numPartitions in body must be of type integer: \"string\"",
            "spec.name: Invalid value: 5",
            "spec.namespace: Required value",
            "spec.autoscaler.mode: Required value",
            "spec.autoscaler.prometheus.ratePerCore: Invalid value: 1.5",
            "spec.autoscaler.prometheus.address: Required value",
            "spec.resourcePolicy.containerPolicies[0].minAllowed[cpu]: Invalid value: true",
            "spec.deploymentTemplate: Invalid value: []",
        ] {
            assert!(
                joined.contains(expected),
                "missing {expected:?} in\n{joined}"
            );
        }
        assert_eq!(warnings, vec!["unknown field \"spec.bogus\"".to_string()]);
    }

    #[test]
    fn deployment_template_is_opaque_and_nulls_count_as_absent() {
        let (errors, warnings) = errors_of(json!({"spec": {
            "numPartitions": 3, "name": "x", "namespace": "y",
            "autoscaler": {"mode": "", "pendingScaleUpDuration": null},
            "resourcePolicy": {},
            "deploymentTemplate": {"anything": {"goes": [1, 2]}}
        }}));
        assert!(errors.is_empty(), "{errors:?}");
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn a_yaml_boolean_name_is_reported_at_metadata_name() {
        let consumer: Value = serde_saphyr::from_str(
            "metadata: {name: n, labels: {team: yes, app: x}}\nspec: {numPartitions: 3, name: x, namespace: y, autoscaler: {mode: ''}}\n",
        )
        .unwrap();
        let (errors, _) = errors_of(consumer);
        let joined = errors.join("\n");
        assert!(
            joined.contains(
                "metadata.name: Invalid value: false: must be a string: YAML reads unquoted"
            ),
            "{joined}"
        );
        assert!(
            joined.contains("metadata.labels[team]: Invalid value: true"),
            "{joined}"
        );
        assert!(!joined.contains("not a readable object"), "{joined}");
    }

    #[test]
    fn int32_fields_reject_out_of_range_numbers() {
        let (errors, _) = errors_of(json!({"spec": {"numPartitions": 3_000_000_000u64}}));
        assert!(
            errors
                .iter()
                .any(|e| e
                    .starts_with("spec.numPartitions: Invalid value: 3000000000: out of range")),
            "{errors:?}"
        );
    }

    /// An object schema of 70 properties (`p0`…`p69`, integers): places past the
    /// 64 bits of [`KeySet`] go to its list. `p0`, `p3` and `p66` are required,
    /// and so is `extra`, a kept unknown field when `preserve` is set.
    fn wide_schema(preserve: bool) -> Compiled {
        let properties: serde_json::Map<String, Value> = (0..70)
            .map(|i| (format!("p{i}"), json!({"type": "integer"})))
            .collect();
        Compiled::new(&json!({
            "type": "object",
            "properties": properties,
            "required": ["p0", "p3", "p66", "extra"],
            "x-kubernetes-preserve-unknown-fields": preserve,
        }))
    }

    /// What the text checks must say: the tree check, and no key twice (a tree
    /// keeps the last of a repeated key).
    fn reference(schema: &Compiled, entries: &[(String, i64)]) -> bool {
        let mut keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort_unstable();
        let unique = keys.windows(2).all(|w| w[0] != w[1]);
        let tree: serde_json::Map<String, Value> =
            entries.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        unique && conforms(schema, &Value::Object(tree))
    }

    fn text_of(entries: &[(String, i64)]) -> String {
        let fields: Vec<String> = entries
            .iter()
            .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str())))
            .collect();
        format!("{{{}}}", fields.join(","))
    }

    #[test]
    fn keys_past_the_first_64_properties_are_checked_for_repeats_and_requirements() {
        let schema = wide_schema(true);
        let entries = |keys: &[&str]| -> Vec<(String, i64)> {
            keys.iter().map(|k| (k.to_string(), 1)).collect()
        };
        for (keys, expected) in [
            (&["p0", "p3", "p66", "extra"][..], true),
            (&["p0", "p3", "p66", "extra", "p65", "p1"][..], true),
            (&["p0", "p3", "extra"][..], false),
            (&["p0", "p66", "extra"][..], false),
            (&["p0", "p3", "p66"][..], false),
            (&["p0", "p3", "p66", "extra", "p66"][..], false),
            (&["p0", "p3", "p66", "extra", "p3"][..], false),
            (&["p0", "p3", "p66", "extra", "extra"][..], false),
            (&["p0", "p3", "p66", "extra", "other", "other"][..], false),
        ] {
            let entries = entries(keys);
            assert_eq!(reference(&schema, &entries), expected, "{keys:?}");
            assert_eq!(
                conforms_json(&schema, &text_of(&entries)),
                expected,
                "{keys:?}"
            );
        }
        let strict = wide_schema(false);
        let entries = entries(&["p0", "p3", "p66", "extra"]);
        assert!(
            !conforms_json(&strict, &text_of(&entries)),
            "extra is unknown"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// The text check (a bit per property, a list for the rest) says what the
        /// tree check says, on objects of known, unknown and repeated keys.
        #[test]
        fn the_text_check_of_a_wide_object_agrees_with_the_tree_check(
            preserve in proptest::prelude::any::<bool>(),
            picks in proptest::collection::vec((0usize..74, -3i64..3_000_000_000), 0..12),
        ) {
            let schema = wide_schema(preserve);
            let mut entries: Vec<(String, i64)> = picks
                .iter()
                .map(|&(i, v)| match i {
                    70 => ("extra".to_string(), v),
                    71 => ("other".to_string(), v),
                    72 | 73 => ("p\\u0036".to_string(), v),
                    i => (format!("p{i}"), v),
                })
                .collect();
            // Most objects carry what is required, so that the rest is checked.
            for required in ["p0", "p3", "p66", "extra"] {
                if picks.len() % 3 != 0 {
                    entries.push((required.to_string(), 1));
                }
            }
            let text = text_of(&entries).replace("\\\\u0036", "\\u0036");
            let decoded: Vec<(String, i64)> = entries
                .iter()
                .map(|(k, v)| (k.replace("\\u0036", "6"), *v))
                .collect();
            proptest::prop_assert_eq!(
                conforms_json(&schema, &text),
                reference(&schema, &decoded),
                "{}", text
            );
        }
    }
}
