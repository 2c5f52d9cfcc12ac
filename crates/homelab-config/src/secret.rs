//! References to secrets. A secret's value never lives in `homelab.toml`: the file names an
//! environment variable or a file, and [`SecretRef::resolve`] reads it into a
//! [`SecretString`] that never prints.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use secrecy::SecretString;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a secret comes from: `{ env = "VAR" }` or `{ file = "/path" }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    /// The value of an environment variable.
    Env(String),
    /// The contents of a file (trailing newline removed); the file must not be readable by
    /// group or others.
    File(PathBuf),
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The environment variable is not set (or empty).
    #[error("environment variable {var} is not set (the configuration reads this secret from it)")]
    EnvNotSet {
        /// The variable's name.
        var: String,
    },
    /// The file could not be read.
    #[error("cannot read secret file {path}: {source}")]
    FileRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is readable by other users.
    #[error(
        "secret file {path} has mode {mode:04o}, readable by group or others; run: chmod 600 {path}"
    )]
    FileTooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The secret is empty.
    #[error("secret from {source_name} is empty")]
    Empty {
        /// Where it was read from.
        source_name: String,
    },
}

impl SecretRef {
    /// Reads the secret. The value is returned in a type whose `Debug` prints `[REDACTED]`.
    ///
    /// # Errors
    /// The variable is unset, the file cannot be read or is group/world readable, or the
    /// secret is empty.
    pub fn resolve(&self) -> Result<SecretString, SecretError> {
        let value = match self {
            Self::Env(var) => {
                std::env::var(var).map_err(|_| SecretError::EnvNotSet { var: var.clone() })?
            }
            Self::File(path) => read_private_file(path)?,
        };
        let trimmed = value.trim_end_matches(['\n', '\r']);
        if trimmed.is_empty() {
            return Err(SecretError::Empty {
                source_name: self.to_string(),
            });
        }
        Ok(SecretString::from(trimmed.to_owned()))
    }

    /// Whether the secret is currently available (variable set, file present), without
    /// reading its value into memory longer than needed.
    pub fn is_available(&self) -> bool {
        self.resolve().is_ok()
    }
}

fn read_private_file(path: &Path) -> Result<String, SecretError> {
    use std::io::Read;
    let read_err = |source| SecretError::FileRead {
        path: path.to_owned(),
        source,
    };
    // Opened once; the mode is checked on that handle, and the contents read from it: the
    // file cannot be swapped between the check and the read.
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(read_err)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretError::FileTooOpen {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(read_err)?;
    Ok(text)
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(var) => write!(f, "environment variable {var}"),
            Self::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

impl Serialize for SecretRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        match self {
            Self::Env(var) => map.serialize_entry("env", var)?,
            Self::File(path) => map.serialize_entry("file", path)?,
        }
        map.end()
    }
}

/// The message given for a secret written inline. It never repeats the value.
pub(crate) const INLINE_SECRET: &str = "a secret value must not be written in the file; \
     write { env = \"VARIABLE\" } or { file = \"/path/to/0600-file\" }";

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RefVisitor;

        impl<'de> Visitor<'de> for RefVisitor {
            type Value = SecretRef;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("{ env = \"VARIABLE\" } or { file = \"PATH\" }")
            }

            // Every scalar is refused with the same message, which never echoes the input.
            fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(E::custom(INLINE_SECRET))
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretRef, E> {
                Err(E::custom(INLINE_SECRET))
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretRef, E> {
                Err(E::custom(INLINE_SECRET))
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<SecretRef, E> {
                Err(E::custom(INLINE_SECRET))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<SecretRef, E> {
                Err(E::custom(INLINE_SECRET))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<SecretRef, A::Error> {
                Err(de::Error::custom(INLINE_SECRET))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
                let mut found = None;
                while let Some(key) = map.next_key::<String>()? {
                    if found.is_some() {
                        return Err(de::Error::custom(
                            "a secret reference has exactly one of `env` or `file`",
                        ));
                    }
                    found = Some(match key.as_str() {
                        "env" => {
                            let var: String = map.next_value()?;
                            if var.is_empty()
                                || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                                || var.as_bytes()[0].is_ascii_digit()
                            {
                                // Not repeated: a value pasted here by mistake is the secret.
                                return Err(de::Error::custom(
                                    "is not an environment variable name (letters, digits, _; \
                                     the value is not shown: if it is the secret itself, put it in \
                                     the environment and name the variable here)",
                                ));
                            }
                            SecretRef::Env(var)
                        }
                        "file" => SecretRef::File(map.next_value()?),
                        other => {
                            return Err(de::Error::custom(format!(
                                "unknown secret source `{other}`; use `env` or `file`"
                            )));
                        }
                    });
                }
                found.ok_or_else(|| de::Error::custom("a secret reference needs `env` or `file`"))
            }
        }

        deserializer.deserialize_any(RefVisitor)
    }
}

impl JsonSchema for SecretRef {
    fn schema_name() -> Cow<'static, str> {
        "SecretRef".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Where a secret is read from; its value is never written in the file.",
            "oneOf": [
                {
                    "type": "object",
                    "properties": { "env": { "type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" } },
                    "required": ["env"],
                    "additionalProperties": false
                },
                {
                    "type": "object",
                    "properties": { "file": { "type": "string" } },
                    "required": ["file"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[derive(Debug, Deserialize)]
    struct Holder {
        token: SecretRef,
    }

    #[test]
    fn inline_value_is_refused_without_echo() {
        // toml's own Display quotes the source line; the message alone is what we report.
        let err = toml::from_str::<Holder>("token = \"hunter2-very-secret\"").unwrap_err();
        let text = err.message().to_owned();
        assert!(text.contains("must not be written"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn env_and_file_references_parse() {
        let h: Holder = toml::from_str("token = { env = \"PULUMI_ACCESS_TOKEN\" }").unwrap();
        assert_eq!(h.token, SecretRef::Env("PULUMI_ACCESS_TOKEN".into()));
        let h: Holder = toml::from_str("token = { file = \"/run/secrets/t\" }").unwrap();
        assert_eq!(h.token, SecretRef::File("/run/secrets/t".into()));
        assert!(toml::from_str::<Holder>("token = { env = \"A\", file = \"/x\" }").is_err());
        assert!(toml::from_str::<Holder>("token = { vault = \"x\" }").is_err());
        assert!(toml::from_str::<Holder>("token = { env = \"1BAD\" }").is_err());
    }

    #[test]
    fn file_secret_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cr3t\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SecretRef::File(path.clone()).resolve().unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let secret = SecretRef::File(path).resolve().unwrap();
        assert_eq!(secret.expose_secret(), "s3cr3t");
        assert!(!format!("{secret:?}").contains("s3cr3t"));
    }

    #[test]
    fn unset_env_names_the_variable() {
        let err = SecretRef::Env("HOMELAB_TEST_SURELY_UNSET_VAR".into())
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("HOMELAB_TEST_SURELY_UNSET_VAR"));
    }
}
