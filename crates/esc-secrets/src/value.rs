//! An opened environment's values: ESC's JSON (`{"value": …, "secret": true, "trace": …}` at
//! every level) as a tree in which every secret scalar is a [`SecretString`] — redacted in
//! `Debug`, zeroized on drop, never `Display`ed.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};

use crate::path::{PropertyPath, Segment};

/// A value of an environment.
///
/// ```
/// use esc_secrets::{PropertyPath, Value};
///
/// // ESC's answer for `{"db": {"password": fn::secret(...)}, "replicas": 2}`.
/// let json = serde_json::json!({"value": {
///     "db": {"value": {"password": {"value": "hunter2", "secret": true}}},
///     "replicas": {"value": 2},
/// }});
/// let values = Value::from_esc(&json);
/// let password = values.get(&"db.password".parse::<PropertyPath>()?).unwrap();
/// assert!(password.is_secret());
/// assert!(!format!("{password:?}").contains("hunter2")); // never printed
/// let leaves: Vec<String> = values.leaves().iter().map(|(p, _)| p.to_string()).collect();
/// assert_eq!(leaves, ["db.password", "replicas"]);
/// # Ok::<(), esc_secrets::path::PathError>(())
/// ```
#[derive(Debug, Clone)]
pub enum Value {
    /// `null`, or nothing.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number, as ESC wrote it.
    Number(serde_json::Number),
    /// A plain string.
    String(String),
    /// A secret scalar, in its text form.
    Secret(SecretString),
    /// A value ESC could not compute (a provider that failed, say).
    Unknown,
    /// An array.
    Array(Vec<Value>),
    /// An object.
    Object(BTreeMap<String, Value>),
}

impl Value {
    /// From ESC's JSON for one value; a secret container makes all it holds secret.
    pub fn from_esc(json: &serde_json::Value) -> Self {
        Self::from_esc_in(json, false)
    }

    fn from_esc_in(json: &serde_json::Value, inherited_secret: bool) -> Self {
        let secret = inherited_secret || json["secret"].as_bool().unwrap_or(false);
        if json["unknown"].as_bool().unwrap_or(false) {
            return Self::Unknown;
        }
        let scalar = |text: String| {
            if secret {
                Self::Secret(text.into())
            } else {
                Self::String(text)
            }
        };
        match &json["value"] {
            serde_json::Value::Null => Self::Null,
            serde_json::Value::Bool(b) if secret => scalar(b.to_string()),
            serde_json::Value::Bool(b) => Self::Bool(*b),
            serde_json::Value::Number(n) if secret => scalar(n.to_string()),
            serde_json::Value::Number(n) => Self::Number(n.clone()),
            serde_json::Value::String(s) => scalar(s.clone()),
            serde_json::Value::Array(items) => {
                Self::Array(items.iter().map(|i| Self::from_esc_in(i, secret)).collect())
            }
            serde_json::Value::Object(map) => Self::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), Self::from_esc_in(v, secret)))
                    .collect(),
            ),
        }
    }

    /// An environment's `properties` (a map of values) as one object.
    pub fn from_properties(properties: &serde_json::Map<String, serde_json::Value>) -> Self {
        Self::Object(
            properties
                .iter()
                .map(|(k, v)| (k.clone(), Self::from_esc(v)))
                .collect(),
        )
    }

    /// The value at `path`, if there is one.
    pub fn get(&self, path: &PropertyPath) -> Option<&Value> {
        path.segments()
            .iter()
            .try_fold(self, |value, segment| match (value, segment) {
                (Self::Object(map), Segment::Key(k)) => map.get(k),
                (Self::Array(items), Segment::Index(i)) => items.get(*i),
                _ => None,
            })
    }

    /// A scalar as text, for a Secret's data (a secret stays a secret; a plain scalar is
    /// wrapped too, since it goes where secrets go). `None` for null, unknown and containers.
    pub fn text(&self) -> Option<SecretString> {
        match self {
            Self::Secret(s) => Some(s.clone()),
            Self::String(s) => Some(s.clone().into()),
            Self::Bool(b) => Some(b.to_string().into()),
            Self::Number(n) => Some(n.to_string().into()),
            _ => None,
        }
    }

    /// Whether this is a secret scalar.
    pub fn is_secret(&self) -> bool {
        matches!(self, Self::Secret(_))
    }

    /// Every leaf's path under this value, with whether it is secret (for listings that
    /// never show values).
    pub fn leaves(&self) -> Vec<(PropertyPath, bool)> {
        let mut out = Vec::new();
        if let Self::Object(map) = self {
            for (k, v) in map {
                v.collect_leaves(PropertyPath::root(k.clone()), &mut out);
            }
        }
        out
    }

    fn collect_leaves(&self, at: PropertyPath, out: &mut Vec<(PropertyPath, bool)>) {
        match self {
            Self::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    v.collect_leaves(at.clone().key(k.clone()), out);
                }
            }
            Self::Array(items) if !items.is_empty() => {
                for (i, v) in items.iter().enumerate() {
                    v.collect_leaves(at.clone().index(i), out);
                }
            }
            other => out.push((at, other.is_secret())),
        }
    }

    /// The value as plain JSON, secrets revealed: only for a caller that was asked to
    /// reveal them (`homelab-secrets get --reveal`).
    pub fn reveal(&self) -> serde_json::Value {
        match self {
            Self::Null | Self::Unknown => serde_json::Value::Null,
            Self::Bool(b) => (*b).into(),
            Self::Number(n) => serde_json::Value::Number(n.clone()),
            Self::String(s) => s.clone().into(),
            Self::Secret(s) => s.expose_secret().into(),
            Self::Array(items) => items.iter().map(Self::reveal).collect(),
            Self::Object(map) => map
                .iter()
                .map(|(k, v)| (k.clone(), v.reveal()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }

    /// The value as JSON with every secret replaced by `"[secret]"`.
    pub fn redacted(&self) -> serde_json::Value {
        match self {
            Self::Secret(_) => "[secret]".into(),
            Self::Array(items) => items.iter().map(Self::redacted).collect(),
            Self::Object(map) => map
                .iter()
                .map(|(k, v)| (k.clone(), v.redacted()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
            other => other.reveal(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        let props = json!({
            "harbor": { "value": {
                "adminPassword": { "value": "hunter2-secret", "secret": true, "trace": {} },
                "url": { "value": "https://harbor.lan", "trace": {} },
                "robots": { "value": [ { "value": 1 }, { "value": true } ] },
            }},
            "github": { "secret": true, "value": { "token": { "value": "ghp_token" } } },
            "pending": { "unknown": true },
        });
        Value::from_properties(props.as_object().unwrap())
    }

    #[test]
    fn secrets_never_print_and_containers_pass_their_secrecy_down() {
        let v = sample();
        let debug = format!("{v:?}");
        assert!(!debug.contains("hunter2-secret"), "{debug}");
        assert!(!debug.contains("ghp_token"), "{debug}");
        let token = v.get(&"github.token".parse().unwrap()).unwrap();
        assert!(token.is_secret());
        assert_eq!(token.text().unwrap().expose_secret(), "ghp_token");
        assert!(!v.get(&"harbor.url".parse().unwrap()).unwrap().is_secret());
        assert!(matches!(
            v.get(&"pending".parse().unwrap()),
            Some(Value::Unknown)
        ));
        assert_eq!(v.redacted()["harbor"]["adminPassword"], json!("[secret]"));
        assert_eq!(
            v.reveal()["harbor"]["adminPassword"],
            json!("hunter2-secret")
        );
    }

    #[test]
    fn paths_reach_into_objects_and_arrays_and_leaves_list_them() {
        let v = sample();
        assert_eq!(
            v.get(&"harbor.robots[1]".parse().unwrap())
                .unwrap()
                .text()
                .unwrap()
                .expose_secret(),
            "true"
        );
        assert!(v.get(&"harbor.robots[2]".parse().unwrap()).is_none());
        assert!(v.get(&"harbor.url.deeper".parse().unwrap()).is_none());
        let leaves: Vec<String> = v
            .leaves()
            .into_iter()
            .map(|(p, s)| format!("{p}{}", if s { " (secret)" } else { "" }))
            .collect();
        assert_eq!(
            leaves,
            [
                "github.token (secret)",
                "harbor.adminPassword (secret)",
                "harbor.robots[0]",
                "harbor.robots[1]",
                "harbor.url",
                "pending"
            ]
        );
    }
}
