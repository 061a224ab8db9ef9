//! [`conforms`](super::conforms) checked on a typed read's own parser events: a
//! deserializer that wraps serde_json's and, as the type's `Deserialize` pulls
//! each value, holds it to the schema node it belongs to (the same predicates
//! as [`Conform`](super::Conform), which checks text without a type). Any value
//! that does not conform fails the read, so a successful read is both "the
//! schema check passes the text unchanged" and the typed value, from one parse.
//!
//! Everything this wrapper does not expect (a visit serde_json does not make, a
//! key that is not a string) also fails the read: the caller then takes the
//! slow path, which words every error.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{Compiled, Field, KeySet, Scalar, Type, conforms_json};
use crate::api::template::RAW_TOKEN;

/// `T` read from `text`, every value checked against `schema` on the way;
/// `None` when the text does not conform or does not read as `T`.
pub(super) fn read<'de, T: Deserialize<'de>>(schema: &Compiled, text: &'de str) -> Option<T> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = T::deserialize(Checked {
        mode: Mode::Schema(schema),
        de: &mut de,
    })
    .ok()?;
    de.end().ok()?;
    Some(value)
}

/// What a value is held to.
#[derive(Clone, Copy)]
enum Mode<'s> {
    Schema(&'s Compiled),
    /// serde_json hands the value over as its raw JSON text (a type that asked
    /// for it, like `DeploymentTemplate`): the text is checked when handed over.
    Raw(&'s Compiled),
}

fn fail<E: de::Error>() -> E {
    E::custom("")
}

/// A deserializer whose every visit is checked against `mode`.
struct Checked<'s, D> {
    mode: Mode<'s>,
    de: D,
}

/// Forwards each listed method to the wrapped deserializer, the visitor wrapped
/// by `self.wrap`.
macro_rules! forward {
    ($($method:ident $(($($arg:ident: $ty:ty),*))?)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($($arg: $ty,)*)? visitor: V) -> Result<V::Value, Self::Error> {
            let (de, visitor) = self.wrap(visitor);
            de.$method($($($arg,)*)? visitor)
        }
    )*};
}

/// Every `deserialize_*` method but `deserialize_newtype_struct`.
macro_rules! forward_all {
    () => {
        forward! {
            deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
            deserialize_i64 deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32
            deserialize_u64 deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char
            deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
            deserialize_option deserialize_unit deserialize_seq deserialize_map
            deserialize_identifier deserialize_ignored_any
            deserialize_unit_struct(name: &'static str)
            deserialize_tuple(len: usize)
            deserialize_tuple_struct(name: &'static str, len: usize)
            deserialize_struct(name: &'static str, fields: &'static [&'static str])
            deserialize_enum(name: &'static str, variants: &'static [&'static str])
        }
    };
}

impl<'s, D> Checked<'s, D> {
    fn wrap<V>(self, visitor: V) -> (D, Check<'s, V>) {
        (
            self.de,
            Check {
                mode: self.mode,
                visitor,
            },
        )
    }
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Checked<'_, D> {
    type Error = D::Error;

    forward_all!();

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let mode = match self.mode {
            Mode::Schema(schema) if name == RAW_TOKEN => Mode::Raw(schema),
            mode => mode,
        };
        self.de
            .deserialize_newtype_struct(name, Check { mode, visitor })
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

/// A visitor that checks what it is shown, then passes it on.
struct Check<'s, V> {
    mode: Mode<'s>,
    visitor: V,
}

impl<V> Check<'_, V> {
    fn scalar<E: de::Error>(&self, value: Scalar<'_>) -> Result<(), E> {
        match self.mode {
            Mode::Schema(schema) if schema.takes_scalar(value) => Ok(()),
            _ => Err(fail()),
        }
    }

    fn string<E: de::Error>(&self, v: &str) -> Result<(), E> {
        match self.mode {
            Mode::Schema(_) => self.scalar(Scalar::Str(v)),
            Mode::Raw(schema) if conforms_json(schema, v) => Ok(()),
            Mode::Raw(_) => Err(fail()),
        }
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Check<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<V::Value, E> {
        self.scalar(Scalar::Bool)?;
        self.visitor.visit_bool(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<V::Value, E> {
        self.scalar(Scalar::Int(Some(v)))?;
        self.visitor.visit_i64(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<V::Value, E> {
        self.scalar(Scalar::Int(i64::try_from(v).ok()))?;
        self.visitor.visit_u64(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<V::Value, E> {
        self.scalar(Scalar::Float)?;
        self.visitor.visit_f64(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        self.string(v)?;
        self.visitor.visit_str(v)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        self.string(v)?;
        self.visitor.visit_borrowed_str(v)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
        self.string(&v)?;
        self.visitor.visit_string(v)
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        // `check` prunes nulls: not unchanged.
        Err(fail())
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        Err(fail())
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
        self.visitor.visit_some(Checked {
            mode: self.mode,
            de,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
        self.visitor.visit_newtype_struct(Checked {
            mode: self.mode,
            de,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let Mode::Schema(schema) = self.mode else {
            return Err(fail());
        };
        if !schema.takes_container(Type::Array) {
            return Err(fail());
        }
        match schema.item_schema() {
            Some(item) => self.visitor.visit_seq(Items { item, seq }),
            // No type: anything but null, and nothing is looked into.
            None => self.visitor.visit_seq(seq),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        match self.mode {
            Mode::Raw(schema) => self.visitor.visit_map(RawEntries { schema, map }),
            Mode::Schema(schema) if !schema.takes_container(Type::Object) => Err(fail()),
            Mode::Schema(schema) if schema.is_object() => self.visitor.visit_map(Entries {
                schema,
                map,
                seen: KeySet::default(),
                next: Next::Unknown,
            }),
            // No type: anything but null, and nothing is looked into.
            Mode::Schema(_) => self.visitor.visit_map(map),
        }
    }
}

/// A seed whose value is checked against `mode`.
struct CheckedSeed<'s, S> {
    mode: Mode<'s>,
    seed: S,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for CheckedSeed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Checked {
            mode: self.mode,
            de,
        })
    }
}

/// An array's items, each checked against `item`.
struct Items<'s, A> {
    item: &'s Compiled,
    seq: A,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Items<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.seq.next_element_seed(CheckedSeed {
            mode: Mode::Schema(self.item),
            seed,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.seq.size_hint()
    }
}

/// What the value after the key just read is held to.
enum Next<'s> {
    Schema(&'s Compiled),
    /// Anything but null.
    NotNull,
    /// Anything.
    Unchecked,
    /// No key read yet.
    Unknown,
}

/// An object's entries, checked as [`Conform`](super::Conform) checks them: known
/// keys only, each once, values against their schema, the required ones present.
struct Entries<'s, 'de, A> {
    schema: &'s Compiled,
    map: A,
    seen: KeySet<'de>,
    next: Next<'s>,
}

impl<'s, 'de, A: MapAccess<'de>> MapAccess<'de> for Entries<'s, 'de, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let mut key = None;
        let Some(value) = self.map.next_key_seed(KeySeed {
            seed,
            key: &mut key,
        })?
        else {
            // Every value seen was checked not null, so present is enough.
            return if self.seen.has_required(self.schema) {
                Ok(None)
            } else {
                Err(fail())
            };
        };
        let key = key.ok_or_else(fail)?;
        self.next = match self.seen.add(self.schema, key) {
            Some(Field::Schema(sub)) => Next::Schema(sub),
            Some(Field::Preserved { required: true }) => Next::NotNull,
            Some(Field::Preserved { required: false }) => Next::Unchecked,
            // Unknown, or given twice.
            Some(Field::Unknown) | None => return Err(fail()),
        };
        Ok(Some(value))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        match std::mem::replace(&mut self.next, Next::Unknown) {
            Next::Schema(schema) => self.map.next_value_seed(CheckedSeed {
                mode: Mode::Schema(schema),
                seed,
            }),
            Next::NotNull => self.map.next_value_seed(CheckedSeed {
                mode: Mode::Schema(&super::ANY),
                seed,
            }),
            Next::Unchecked => self.map.next_value_seed(seed),
            Next::Unknown => Err(fail()),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

/// serde_json's one-entry map that hands a value over as raw text: the text is
/// checked against `schema` when it comes.
struct RawEntries<'s, A> {
    schema: &'s Compiled,
    map: A,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for RawEntries<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.map.next_key_seed(seed)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.map.next_value_seed(CheckedSeed {
            mode: Mode::Raw(self.schema),
            seed,
        })
    }
}

/// A map key's seed that also keeps the key's text (borrowed when it has no
/// escapes), for the schema lookup.
struct KeySeed<'k, 'de, S> {
    seed: S,
    key: &'k mut Option<Cow<'de, str>>,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<'_, 'de, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(KeyDe { de, key: self.key })
    }
}

struct KeyDe<'k, 'de, D> {
    de: D,
    key: &'k mut Option<Cow<'de, str>>,
}

impl<'k, 'de, D> KeyDe<'k, 'de, D> {
    fn wrap<V>(self, visitor: V) -> (D, KeyVisitor<'k, 'de, V>) {
        (
            self.de,
            KeyVisitor {
                visitor,
                key: self.key,
            },
        )
    }
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for KeyDe<'_, 'de, D> {
    type Error = D::Error;

    forward_all!();

    forward! { deserialize_newtype_struct(name: &'static str) }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

/// Keeps the key's text; a key that is not a string is refused (serde_json's
/// keys always are).
struct KeyVisitor<'k, 'de, V> {
    visitor: V,
    key: &'k mut Option<Cow<'de, str>>,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for KeyVisitor<'_, 'de, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        *self.key = Some(Cow::Owned(v.to_owned()));
        self.visitor.visit_str(v)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        *self.key = Some(Cow::Borrowed(v));
        self.visitor.visit_borrowed_str(v)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
        *self.key = Some(Cow::Owned(v.clone()));
        self.visitor.visit_string(v)
    }
}
