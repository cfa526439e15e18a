//! Field parsing as lenient as the reference service's (Django REST
//! framework): integers and booleans may come as JSON numbers or strings
//! (`"1"`, `"30"`), booleans also as `"True"`, `"1"`, `"yes"` (Python's
//! `requests` sends `True` in query strings). Anything else is refused by
//! serde with the field's name, and the family answers 400.

use serde::{Deserialize, Deserializer};

/// A non-negative integer from a JSON number or text, refused with DRF's
/// words (an untagged enum would say only that no variant matched).
struct NumOrText(u64);

const NOT_INTEGER: &str = "A valid integer is required.";
const NEGATIVE: &str = "Ensure this value is greater than or equal to 0.";

impl<'de> Deserialize<'de> for NumOrText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = NumOrText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<NumOrText, E> {
                Ok(NumOrText(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<NumOrText, E> {
                u64::try_from(n)
                    .map(NumOrText)
                    .map_err(|_| E::custom(NEGATIVE))
            }
            fn visit_f64<E: serde::de::Error>(self, x: f64) -> Result<NumOrText, E> {
                // DRF takes 3.0 as 3, and refuses 3.5.
                if x.fract() != 0.0 || !x.is_finite() {
                    Err(E::custom(NOT_INTEGER))
                } else if x < 0.0 {
                    Err(E::custom(NEGATIVE))
                } else if x >= u64::MAX as f64 {
                    Err(E::custom("Ensure this value is less than 4294967296."))
                } else {
                    Ok(NumOrText(x as u64))
                }
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<NumOrText, E> {
                // DRF takes "3.0" as 3, as it takes 3.0.
                let s = whole(s);
                match s.parse::<i128>() {
                    Ok(n) if n < 0 => Err(E::custom(NEGATIVE)),
                    Ok(n) => u64::try_from(n)
                        .map(NumOrText)
                        .map_err(|_| E::custom("Ensure this value is less than 4294967296.")),
                    Err(_) => Err(E::custom(NOT_INTEGER)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `s` without a fraction of zeros (`"3.0"` -> `"3"`), trimmed.
fn whole(s: &str) -> &str {
    let s = s.trim();
    match s.split_once('.') {
        Some((int, frac)) if !frac.is_empty() && frac.bytes().all(|b| b == b'0') => int,
        _ => s,
    }
}

/// A boolean from `true`/`false`, 0/1 or their spellings as text,
/// refused in DRF's words.
struct BoolOrText(bool);

impl<'de> Deserialize<'de> for BoolOrText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = BoolOrText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a boolean")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<BoolOrText, E> {
                Ok(BoolOrText(b))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<BoolOrText, E> {
                match n {
                    0 => Ok(BoolOrText(false)),
                    1 => Ok(BoolOrText(true)),
                    _ => Err(E::custom("Must be a valid boolean.")),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<BoolOrText, E> {
                Err(E::custom("Must be a valid boolean."))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<BoolOrText, E> {
                Err(E::custom("Must be a valid boolean."))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<BoolOrText, E> {
                parse_bool(s)
                    .map(BoolOrText)
                    .ok_or_else(|| E::custom("Must be a valid boolean."))
            }
        }
        d.deserialize_any(V)
    }
}

fn to_u32<E: serde::de::Error>(NumOrText(n): NumOrText) -> Result<u32, E> {
    u32::try_from(n).map_err(|_| E::custom("Ensure this value is less than 4294967296."))
}

/// `Option<u32>` from a number or a numeric string.
pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Option::<NumOrText>::deserialize(d)?.map(to_u32).transpose()
}

/// `Option<Option<u32>>`: absent (None), null (Some(None)) or a number.
pub fn opt_opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u32>>, D::Error> {
    Ok(Some(
        Option::<NumOrText>::deserialize(d)?
            .map(to_u32)
            .transpose()?,
    ))
}

/// `Option<Vec<u32>>` whose items are numbers or numeric strings.
pub fn opt_u32_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u32>>, D::Error> {
    Option::<Vec<NumOrText>>::deserialize(d)?
        .map(|v| v.into_iter().map(to_u32).collect())
        .transpose()
}

/// A whole number as text in DRF's leniency (`"14"`, `"14.0"`; not
/// `"14.5"`), for query parameters.
pub fn parse_u64(s: &str) -> Option<u64> {
    whole(s).parse::<u64>().ok()
}

/// A boolean from `true`/`false`, 1/0 or their spellings as text.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// `Option<bool>` from a boolean, 0/1 or text.
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(Option::<BoolOrText>::deserialize(d)?.map(|BoolOrText(b)| b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        #[serde(default, deserialize_with = "opt_u32")]
        n: Option<u32>,
        #[serde(default, deserialize_with = "opt_opt_u32")]
        days: Option<Option<u32>>,
        #[serde(default, deserialize_with = "opt_bool")]
        b: Option<bool>,
        #[serde(default, deserialize_with = "opt_u32_list")]
        ids: Option<Vec<u32>>,
    }

    fn t(s: &str) -> Result<T, serde_json::Error> {
        serde_json::from_str(s)
    }

    #[test]
    fn numbers_and_booleans_as_drf_takes_them() {
        let v = t(r#"{"n": "1", "days": "30", "b": "True"}"#).unwrap();
        assert_eq!((v.n, v.days, v.b), (Some(1), Some(Some(30)), Some(true)));
        let v = t(r#"{"n": 2, "days": null, "b": 0}"#).unwrap();
        assert_eq!((v.n, v.days, v.b), (Some(2), Some(None), Some(false)));
        let v = t("{}").unwrap();
        assert_eq!((v.n, v.days, v.b), (None, None, None));
        let msg = |s: &str| t(s).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg(r#"{"n": "one"}"#).starts_with(NOT_INTEGER));
        assert!(msg(r#"{"n": 2.5}"#).starts_with(NOT_INTEGER));
        assert!(msg(r#"{"n": -1}"#).starts_with(NEGATIVE));
        assert!(msg(r#"{"days": "-5"}"#).starts_with(NEGATIVE));
        assert_eq!(t(r#"{"n": 3.0}"#).unwrap().n, Some(3));
        assert_eq!(t(r#"{"n": "3.00"}"#).unwrap().n, Some(3));
        assert!(msg(r#"{"n": "3.5"}"#).starts_with(NOT_INTEGER));
        assert!(msg(r#"{"b": -1}"#).starts_with("Must be a valid boolean."));
        assert!(
            msg(r#"{"b": []}"#).contains("a boolean"),
            "{}",
            msg(r#"{"b": []}"#)
        );
        assert!(t(r#"{"b": "maybe"}"#).is_err());
        let uri: axum::http::Uri = "/x?n=3&b=False".parse().unwrap();
        let q = axum::extract::Query::<T>::try_from_uri(&uri).unwrap().0;
        assert_eq!((q.n, q.b), (Some(3), Some(false)));
        assert_eq!(
            t(r#"{"ids": [30, "31", "40.0"]}"#).unwrap().ids,
            Some(vec![30, 31, 40])
        );
        assert!(msg(r#"{"ids": [30, "x"]}"#).starts_with(NOT_INTEGER));
        assert_eq!(t(r#"{"ids": null}"#).unwrap().ids, None);
        assert_eq!(
            ["14", " 14.0 ", "14.5", "-1", "x"].map(parse_u64),
            [Some(14), Some(14), None, None, None]
        );
    }
}
