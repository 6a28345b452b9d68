//! Typed query strings and JSON bodies. Every refusal is an `ApiError` that names the
//! parameter or field, the value and what is allowed.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::error::{ApiError, ErrorCode};

/// A query string's shape: the parameters it allows and what each may be.
pub trait QueryShape: DeserializeOwned {
    const NAMES: &'static [&'static str];
    /// What a value of `name` may be, for the message that refuses one.
    fn allowed(name: &str) -> &'static str;
}

/// A query string of the shape `T`; unknown and repeated parameters are refused.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: QueryShape> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|e| {
            ApiError::invalid_parameter(format!("the query string is malformed: {e}"))
        })?;
        for (i, (k, _)) in pairs.iter().enumerate() {
            if !T::NAMES.contains(&k.as_str()) {
                return Err(ApiError::invalid_parameter(format!(
                    "unknown parameter `{k}`; allowed: {}",
                    T::NAMES.join(", ")
                )));
            }
            if pairs[..i].iter().any(|(seen, _)| seen == k) {
                return Err(ApiError::invalid_parameter(format!(
                    "parameter `{k}` is given more than once"
                )));
            }
        }
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Params)
            .map_err(|e| {
                let name = e.path().to_string();
                match pairs.iter().find(|(k, _)| *k == name) {
                    Some((_, value)) => ApiError::invalid_parameter(format!(
                        "parameter `{name}` is `{value}`; allowed: {}",
                        T::allowed(&name)
                    )),
                    None => ApiError::invalid_parameter(format!(
                        "the query string is malformed: {}",
                        e.inner()
                    )),
                }
            })
    }
}

/// A JSON object body's shape: its fields, which are required, and what each may be.
pub trait BodyShape: DeserializeOwned {
    const NAMES: &'static [&'static str];
    const REQUIRED: &'static [&'static str];
    /// What a value of `name` may be, for the message that refuses one.
    fn allowed(name: &str) -> &'static str;
}

/// A JSON object body of the shape `T`; unknown fields are refused.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: BodyShape> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(Bytes::from_request(req, state).await)?;
        let shape = format!("with {}", T::NAMES.join(", "));
        let object = match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Err(ApiError::invalid_body(format!(
                    "the body must be a JSON object {shape}"
                )));
            }
            Err(e) => {
                return Err(ApiError::invalid_body(format!(
                    "the body must be a JSON object {shape}: {e}"
                )));
            }
        };
        if let Some(k) = object.keys().find(|k| !T::NAMES.contains(&k.as_str())) {
            return Err(ApiError::invalid_body(format!(
                "unknown field `{k}`; allowed: {}",
                T::NAMES.join(", ")
            )));
        }
        if let Some(k) = T::REQUIRED
            .iter()
            .find(|k| object.get(**k).is_none_or(Value::is_null))
        {
            return Err(ApiError::invalid_body(format!(
                "field `{k}` is required: {}",
                T::allowed(k)
            )));
        }
        serde_path_to_error::deserialize(Value::Object(object))
            .map(Body)
            .map_err(|e| {
                let name = e.path().to_string();
                ApiError::invalid_body(format!("field `{name}` must be {}", T::allowed(&name)))
            })
    }
}

pub(super) fn body_bytes(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                "the request body is larger than the server accepts (see --max-body-bytes)",
            )
        } else {
            ApiError::invalid_body(format!("the request body could not be read: {e}"))
        }
    })
}

/// A flag parameter: `true`, `1` or nothing at all for yes; `false` or `0` for no.
pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match String::deserialize(d)?.as_str() {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(serde::de::Error::custom("not a flag")),
    }
}

/// `None`: absent; `Some(None)`: null, which clears; `Some(Some(s))`: a new value.
pub fn clearable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}
