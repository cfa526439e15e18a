//! Field parsing as lenient as the reference service's (Django REST
//! framework): integers and booleans may come as JSON numbers or strings
//! (`"1"`, `"30"`), booleans also as `"True"`, `"1"`, `"yes"` (Python's
//! `requests` sends `True` in query strings). Anything else is refused by
//! serde with the field's name, and the family answers 400.

use serde::{Deserialize, Deserializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrText {
    Num(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum BoolOrText {
    Bool(bool),
    Num(u64),
    Text(String),
}

fn to_u32<E: serde::de::Error>(v: NumOrText) -> Result<u32, E> {
    let n = match v {
        NumOrText::Num(n) => n,
        NumOrText::Text(s) => s
            .trim()
            .parse::<u64>()
            .map_err(|_| E::custom(format!("A valid integer is required, not {s:?}.")))?,
    };
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
    use serde::de::Error;
    Option::<BoolOrText>::deserialize(d)?
        .map(|v| match v {
            BoolOrText::Bool(b) => Ok(b),
            BoolOrText::Num(0) => Ok(false),
            BoolOrText::Num(1) => Ok(true),
            BoolOrText::Num(n) => Err(D::Error::custom(format!(
                "Must be a valid boolean, not {n}."
            ))),
            BoolOrText::Text(s) => parse_bool(&s)
                .ok_or_else(|| D::Error::custom(format!("Must be a valid boolean, not {s:?}."))),
        })
        .transpose()
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
        assert!(t(r#"{"n": "one"}"#).is_err());
        assert!(t(r#"{"n": -1}"#).is_err());
        assert!(t(r#"{"b": "maybe"}"#).is_err());
        let uri: axum::http::Uri = "/x?n=3&b=False".parse().unwrap();
        let q = axum::extract::Query::<T>::try_from_uri(&uri).unwrap().0;
        assert_eq!((q.n, q.b), (Some(3), Some(false)));
    }
}
