//! Whole numbers as JSON Schema counts them: `3` and `3.0` are the same integer, so a
//! field the OpenAPI document calls an `integer` takes both (serde's own `u64` takes only
//! the first). A fraction, a negative or a number past the type's range is refused.
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;

struct Whole(u64);

impl<'de> Visitor<'de> for Whole {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a whole number from 0 to {}", self.0)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        if v <= self.0 {
            Ok(v)
        } else {
            Err(E::invalid_value(de::Unexpected::Unsigned(v), &self))
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            .and_then(|v| self.visit_u64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        // Exact up to 2^53: larger floats are not whole numbers one can trust.
        if v.fract() == 0.0 && (0.0..=crate::usage::MAX_COUNT as f64).contains(&v) {
            self.visit_u64(v as u64)
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }
}

/// A `u64` field that takes `3` and `3.0`.
pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(Whole(u64::MAX))
}

/// A `u32` field that takes `3` and `3.0`.
pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    d.deserialize_any(Whole(u32::MAX.into())).map(|v| v as u32)
}

/// An `Option<u64>` field (give it `#[serde(default)]` too) that takes `3` and `3.0`.
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Opt;
    impl<'de> Visitor<'de> for Opt {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Option<u64>, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<u64>, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Option<u64>, D2::Error> {
            u64(d).map(Some)
        }
    }
    d.deserialize_option(Opt)
}

/// An `Option<u32>` field (give it `#[serde(default)]` too) that takes `3` and `3.0`.
pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    opt_u64(d)?
        .map(|v| u32::try_from(v).map_err(|_| de::Error::custom(format!("{v} is past {}", u32::MAX))))
        .transpose()
}

/// An `Option<i32>` field (give it `#[serde(default)]` too) that takes `-3` and `-3.0`.
pub fn opt_i32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    let v = Option::<serde_json::Number>::deserialize(d)?;
    v.map(|n| {
        let whole = n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() <= f64::from(i32::MAX))
                .map(|f| f as i64)
        });
        whole
            .and_then(|w| i32::try_from(w).ok())
            .ok_or_else(|| de::Error::custom(format!("{n} is not a whole number from {} to {}", i32::MIN, i32::MAX)))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct T {
        #[serde(deserialize_with = "super::u64")]
        n: u64,
        #[serde(default, deserialize_with = "super::opt_u64")]
        o: Option<u64>,
        #[serde(default = "one", deserialize_with = "super::u32")]
        s: u32,
    }

    fn one() -> u32 {
        1
    }

    #[test]
    fn whole_floats_are_integers_and_fractions_are_not() {
        let t = |j: &str| serde_json::from_str::<T>(j);
        assert_eq!(t(r#"{"n": 3}"#).unwrap(), T { n: 3, o: None, s: 1 });
        assert_eq!(
            t(r#"{"n": 3.0, "o": 7.0, "s": 2.0}"#).unwrap(),
            T { n: 3, o: Some(7), s: 2 }
        );
        assert_eq!(t(r#"{"n": 3, "o": null}"#).unwrap().o, None);
        // Written with a fraction of zero, a whole number below 2^53 is read exactly (the
        // fuzzer sent this one, which a parser off by one ulp reads as ….5).
        assert_eq!(t(r#"{"n": 4416693576599586.0}"#).unwrap().n, 4_416_693_576_599_586);
        for bad in [
            r#"{"n": 3.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": "3"}"#,
            r#"{"n": 1e300}"#,
            r#"{"n": 1, "s": 4294967296}"#,
        ] {
            assert!(t(bad).is_err(), "{bad}");
        }
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Small {
        #[serde(default, deserialize_with = "super::opt_u32")]
        u: Option<u32>,
        #[serde(default, deserialize_with = "super::opt_i32")]
        i: Option<i32>,
    }

    #[test]
    fn small_options_take_whole_numbers_in_their_range() {
        let t = |j: &str| serde_json::from_str::<Small>(j);
        assert_eq!(
            t(r#"{"u": 3.0, "i": -4.0}"#).unwrap(),
            Small {
                u: Some(3),
                i: Some(-4)
            }
        );
        assert_eq!(t(r#"{"u": null}"#).unwrap(), Small { u: None, i: None });
        assert_eq!(t(r#"{}"#).unwrap(), Small { u: None, i: None });
        for bad in [
            r#"{"u": -1}"#,
            r#"{"u": 4294967296}"#,
            r#"{"i": 2147483648}"#,
            r#"{"i": 1.5}"#,
            r#"{"i": "1"}"#,
        ] {
            assert!(t(bad).is_err(), "{bad}");
        }
    }
}
