//! The shapes Compose allows for one key (a string or a list, a list or a map, a short string or
//! a long mapping) and the scalars it casts after interpolation (`replicas: "${N:-2}"` is a
//! string until then). Each is a serde visitor, so a bad value fails at its own path.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// A scalar written as a string, number or boolean, kept as the text Compose would use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A whole number, or a string holding one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Int(pub i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Int, D::Error> {
        let s = Scalar::deserialize(d)?;
        s.0.trim().parse().map(Int).map_err(|_| de::Error::custom(format!("{:?} is not a whole number", s.0)))
    }
}

/// A number (integer or decimal), or a string holding one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Num(pub f64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Num, D::Error> {
        let s = Scalar::deserialize(d)?;
        match s.0.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Num(v)),
            _ => Err(de::Error::custom(format!("{:?} is not a number", s.0))),
        }
    }
}

/// `true`/`false`, or a string holding one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Bool(pub bool);

impl<'de> Deserialize<'de> for Bool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bool, D::Error> {
        let s = Scalar::deserialize(d)?;
        match s.0.as_str() {
            "true" | "True" | "TRUE" | "yes" | "on" => Ok(Bool(true)),
            "false" | "False" | "FALSE" | "no" | "off" => Ok(Bool(false)),
            other => Err(de::Error::custom(format!("{other:?} is not a boolean: use true or false"))),
        }
    }
}

/// A string or a list of strings (`command`, `entrypoint`, `env_file`, `healthcheck.test`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringOrList {
    String(String),
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for StringOrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StringOrList, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringOrList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringOrList, E> {
                Ok(StringOrList::String(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringOrList, A::Error> {
                let mut out = vec![];
                while let Some(s) = seq.next_element::<Scalar>()? {
                    out.push(s.0);
                }
                Ok(StringOrList::List(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// `KEY=VALUE` entries written as a list or as a map (`environment`, `labels`); a map value may
/// be null (`KEY:` takes the variable from the environment for `environment`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ListOrMap(pub BTreeMap<String, Option<String>>);

impl<'de> Deserialize<'de> for ListOrMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ListOrMap, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ListOrMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of KEY=VALUE strings or a map")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ListOrMap, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(s) = seq.next_element::<String>()? {
                    match s.split_once('=') {
                        Some((k, v)) => out.insert(k.to_string(), Some(v.to_string())),
                        None => out.insert(s, None),
                    };
                }
                Ok(ListOrMap(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ListOrMap, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, Option<Scalar>>()? {
                    out.insert(k, v.map(|s| s.0));
                }
                Ok(ListOrMap(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration in Go's syntax (`1m30s`, `500ms`, `2h`), Compose's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Duration {
    pub ms: u64,
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = Scalar::deserialize(d)?;
        parse_duration_ms(&s.0).map(|ms| Duration { ms }).map_err(de::Error::custom)
    }
}

/// A duration or size in a Compose file that does not parse, with the value as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("{given:?} is not a duration like 10s, 1m30s or 500ms")]
    NotADuration { given: String },
    #[error("{given:?} is too long")]
    TooLong { given: String },
    #[error("{given:?} is not a size like 512M, 1G or 65536")]
    NotASize { given: String },
    #[error("{given:?} is too large")]
    TooLarge { given: String },
}

/// Go's `time.ParseDuration`: a sequence of decimal numbers with units ns, us, ms, s, m, h.
pub fn parse_duration_ms(s: &str) -> Result<u64, ValueError> {
    let bad = || ValueError::NotADuration { given: s.to_string() };
    let t = s.trim();
    if t == "0" {
        return Ok(0);
    }
    let mut rest = t;
    let mut total_ns = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let per = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total_ns += n * per;
        rest = tail;
    }
    let ms = total_ns / 1e6;
    if !ms.is_finite() || ms > 1e15 {
        return Err(ValueError::TooLong { given: s.to_string() });
    }
    Ok(ms.round() as u64)
}

/// A size in bytes: a number, or a string with a unit (`512M`, `1gb`, `64k`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let s = Scalar::deserialize(d)?;
        parse_bytes(&s.0).map(Bytes).map_err(de::Error::custom)
    }
}

pub fn parse_bytes(s: &str) -> Result<u64, ValueError> {
    let t = s.trim().to_ascii_lowercase();
    let digits = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let bad = || ValueError::NotASize { given: s.to_string() };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let v = n * mult as f64;
    if !v.is_finite() || v >= u64::MAX as f64 {
        return Err(ValueError::TooLarge { given: s.to_string() });
    }
    Ok(v as u64)
}

/// A key that is written either as a short string (or number) or as a long mapping.
pub trait ShortOrLong: Sized {
    type Long: for<'de> Deserialize<'de>;
    const EXPECTING: &'static str;
    /// Why a short form does not parse (serde prints it with the key's path).
    type Error: fmt::Display;
    fn short(s: &str) -> Result<Self, Self::Error>;
    fn long(l: Self::Long) -> Self;
}

/// Deserialises a [`ShortOrLong`] value; errors of the long form keep their own path.
#[derive(Debug)]
pub struct Either<T>(pub T);

impl<'de, T: ShortOrLong> Deserialize<'de> for Either<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Either<T>, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: ShortOrLong> Visitor<'de> for V<T> {
            type Value = Either<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Either<T>, E> {
                T::short(v).map(Either).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Either<T>, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Either<T>, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Either<T>, A::Error> {
                let long = T::Long::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Either(T::long(long)))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration_ms("1m30s"), Ok(90_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("1.5s"), Ok(1_500));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_duration_ms("0"), Ok(0));
        assert!(parse_duration_ms("10").is_err(), "Go needs a unit");
        assert!(parse_duration_ms("").is_err());
        assert!(parse_duration_ms("5 parsecs").is_err());
        assert!(parse_duration_ms("99999999999999999h").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("1gb"), Ok(1 << 30));
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("1e30t").is_err());
    }
}
