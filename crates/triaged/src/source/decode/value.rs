//! The borrowed JSON tree the decoders read: a payload parsed once, with
//! strings that need no unescaping borrowed from it and objects kept as plain
//! vectors of key/value pairs.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A parsed JSON value borrowing unescaped strings from the payload.
#[derive(Debug)]
pub(super) enum V<'a> {
    Null,
    /// Only the type matters to the decoders.
    Bool,
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    Arr(Vec<V<'a>>),
    Obj(Vec<(Cow<'a, str>, V<'a>)>),
}

pub(super) type Fields<'a> = [(Cow<'a, str>, V<'a>)];

impl V<'_> {
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            V::Null => "null",
            V::Bool => "boolean",
            V::Int(_) | V::UInt(_) | V::Float(_) => "number",
            V::Str(_) => "string",
            V::Arr(_) => "array",
            V::Obj(_) => "object",
        }
    }
}

impl<'de> Deserialize<'de> for V<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor { skip: &[] })
    }
}

/// Builds a [`V`]; keys in `skip` are passed over without building their value.
struct ValueVisitor {
    skip: &'static [&'static str],
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = V<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<V<'de>, E> {
        Ok(V::Bool)
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<V<'de>, E> {
        Ok(V::Int(n))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<V<'de>, E> {
        Ok(V::UInt(n))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<V<'de>, E> {
        Ok(V::Float(n))
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<V<'de>, E> {
        Ok(V::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<V<'de>, E> {
        Ok(V::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<V<'de>, E> {
        Ok(V::Str(Cow::Owned(s)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<V<'de>, E> {
        Ok(V::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<V<'de>, E> {
        Ok(V::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V<'de>, D::Error> {
        V::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<V<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element::<V<'de>>()? {
            items.push(item);
        }
        Ok(V::Arr(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<V<'de>, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            if self.skip.contains(&k.as_ref()) {
                map.next_value::<de::IgnoredAny>()?;
            } else {
                let v = map.next_value::<V<'de>>()?;
                fields.push((k, v));
            }
        }
        Ok(V::Obj(fields))
    }
}

/// Top-level keys no decoder reads: the Alertmanager webhook's group-wide
/// copies of what every alert carries anyway. Skipped without building a tree.
const SKIPPED_TOP_LEVEL_KEYS: [&str; 3] = ["commonLabels", "commonAnnotations", "groupLabels"];

/// The payload's top-level value; like [`V`], minus [`SKIPPED_TOP_LEVEL_KEYS`].
pub(super) struct Root<'a>(pub(super) V<'a>);

impl<'de> Deserialize<'de> for Root<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor { skip: &SKIPPED_TOP_LEVEL_KEYS }).map(Root)
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}
