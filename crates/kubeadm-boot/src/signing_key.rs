//! The package repository's signing key, fetched on the host (not on the nodes, whose base
//! image has neither `curl` nor `gpg`) and checked against a pinned OpenPGP fingerprint
//! before it is uploaded to the nodes as an armored keyring apt reads directly.

use std::fmt;

use base64::Engine;
use sha1::{Digest, Sha1};

/// An ASCII-armored OpenPGP public key whose fingerprint was computed here.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    armored: String,
    fingerprint: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Why a key was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not an armored OpenPGP public key.
    #[error("{source_name} is not an ASCII-armored OpenPGP public key: {message}")]
    Format {
        /// Where the key came from.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// The key is not the pinned one.
    #[error(
        "{source_name} has fingerprint {actual}, but {expected} is pinned: refused (if the repository really changed its key, check the new one and update the pin)"
    )]
    Mismatch {
        /// Where the key came from.
        source_name: String,
        /// The pinned fingerprint.
        expected: String,
        /// The fingerprint of the key received.
        actual: String,
    },
    /// The key could not be downloaded: the request failed on the way, or the server
    /// answered with an error status.
    #[error("downloading {url}: {}", match (.status, .source) {
        (Some(status), _) => format!("HTTP {status}"),
        (None, Some(source)) => source.to_string(),
        (None, None) => "failed".to_owned(),
    })]
    Download {
        /// The key's URL.
        url: String,
        /// The server's error status, when it answered with one.
        status: Option<u16>,
        /// The HTTP client's error, when the request failed on the way.
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
}

/// A fingerprint as 40 upper-case hex digits, whatever spaces or case it was written with.
pub fn normalize_fingerprint(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase()
}

impl SigningKey {
    /// Parses an armored public key and computes its primary key's (v4) fingerprint.
    ///
    /// # Errors
    /// The text is not an armored OpenPGP public key with a v4 primary key.
    pub fn parse(source_name: &str, armored: &str) -> Result<Self, KeyError> {
        let fail = |message: &str| KeyError::Format {
            source_name: source_name.to_owned(),
            message: message.to_owned(),
        };
        let binary = dearmor(armored).map_err(|m| fail(&m))?;
        let body = first_public_key(&binary).map_err(|m| fail(&m))?;
        if body.first() != Some(&4) {
            return Err(fail("its primary key is not an OpenPGP v4 key"));
        }
        let length = u16::try_from(body.len()).map_err(|_| fail("its key packet is too long"))?;
        let mut hash = Sha1::new();
        hash.update([0x99]);
        hash.update(length.to_be_bytes());
        hash.update(body);
        Ok(Self {
            armored: armored.to_owned(),
            fingerprint: hex::encode_upper(hash.finalize()),
        })
    }

    /// Parses the key and refuses it unless its fingerprint is `pinned`.
    ///
    /// # Errors
    /// The key does not parse or is not the pinned one (both fingerprints are named).
    pub fn parse_pinned(source_name: &str, armored: &str, pinned: &str) -> Result<Self, KeyError> {
        let key = Self::parse(source_name, armored)?;
        let expected = normalize_fingerprint(pinned);
        if key.fingerprint != expected {
            return Err(KeyError::Mismatch {
                source_name: source_name.to_owned(),
                expected,
                actual: key.fingerprint,
            });
        }
        Ok(key)
    }

    /// The primary key's fingerprint (40 upper-case hex digits).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The armored key, as apt reads it from a `.asc` keyring.
    pub fn armored(&self) -> &str {
        &self.armored
    }
}

/// The binary packets inside an ASCII armor (RFC 4880, section 6.2).
fn dearmor(text: &str) -> Result<Vec<u8>, String> {
    let mut lines = text.lines().map(str::trim_end);
    lines
        .by_ref()
        .find(|l| *l == "-----BEGIN PGP PUBLIC KEY BLOCK-----")
        .ok_or("no BEGIN PGP PUBLIC KEY BLOCK line")?;
    // Armor headers (e.g. `Version:`) end at the first empty line.
    let mut body = String::new();
    let mut in_headers = true;
    for line in lines {
        if line.starts_with("-----END PGP PUBLIC KEY BLOCK-----") {
            return base64::engine::general_purpose::STANDARD
                .decode(body.as_bytes())
                .map_err(|e| format!("bad base64: {e}"));
        }
        if in_headers {
            if line.is_empty() {
                in_headers = false;
            } else if !line.contains(": ") {
                // No headers at all: this line is already data.
                in_headers = false;
                body.push_str(line);
            }
            continue;
        }
        if line.starts_with('=') {
            // The CRC-24 checksum line.
            continue;
        }
        body.push_str(line);
    }
    Err("no END PGP PUBLIC KEY BLOCK line".into())
}

/// The body of the first packet, which must be a public-key packet (tag 6).
fn first_public_key(data: &[u8]) -> Result<&[u8], String> {
    let header = *data.first().ok_or("no packets")?;
    if header & 0x80 == 0 {
        return Err("not an OpenPGP packet".into());
    }
    let (tag, length, start) = if header & 0x40 != 0 {
        // New packet format.
        let tag = header & 0x3f;
        let first = usize::from(*data.get(1).ok_or("truncated packet header")?);
        match first {
            0..=191 => (tag, first, 2),
            192..=223 => {
                let second = usize::from(*data.get(2).ok_or("truncated packet header")?);
                (tag, ((first - 192) << 8) + second + 192, 3)
            }
            255 => {
                let bytes = data.get(2..6).ok_or("truncated packet header")?;
                let n = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                (tag, usize::try_from(n).map_err(|_| "packet too long")?, 6)
            }
            _ => return Err("partial body lengths are not allowed for keys".into()),
        }
    } else {
        // Old packet format.
        let tag = (header >> 2) & 0x0f;
        let (n, start) = match header & 0x03 {
            0 => (
                usize::from(*data.get(1).ok_or("truncated packet header")?),
                2,
            ),
            1 => {
                let b = data.get(1..3).ok_or("truncated packet header")?;
                (usize::from(u16::from_be_bytes([b[0], b[1]])), 3)
            }
            2 => {
                let b = data.get(1..5).ok_or("truncated packet header")?;
                let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                (usize::try_from(n).map_err(|_| "packet too long")?, 5)
            }
            _ => return Err("indeterminate packet length".into()),
        };
        (tag, n, start)
    };
    if tag != 6 {
        return Err(format!(
            "the first packet is of type {tag}, not a public key (6)"
        ));
    }
    data.get(start..start + length)
        .ok_or_else(|| "truncated public key packet".to_owned())
}

/// Downloads the repository's `Release.key` at `url` and checks it against `pinned`.
///
/// # Errors
/// The download fails, or the key does not parse or is not the pinned one.
#[cfg(feature = "cluster")]
pub async fn fetch(
    http: &reqwest::Client,
    url: &str,
    pinned: &str,
) -> Result<SigningKey, KeyError> {
    let fail = |e: reqwest::Error| KeyError::Download {
        url: url.to_owned(),
        status: None,
        source: Some(Box::new(e)),
    };
    let response = http.get(url).send().await.map_err(fail)?;
    if !response.status().is_success() {
        return Err(KeyError::Download {
            url: url.to_owned(),
            status: Some(response.status().as_u16()),
            source: None,
        });
    }
    let text = response.text().await.map_err(fail)?;
    SigningKey::parse_pinned(url, &text, pinned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn garbage_is_refused_with_what_is_wrong() {
        let err = SigningKey::parse("k", "hello").unwrap_err().to_string();
        assert!(err.contains("no BEGIN PGP PUBLIC KEY BLOCK"), "{err}");
        let not_a_key = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nyAQBAgME\n-----END PGP PUBLIC KEY BLOCK-----\n";
        let err = SigningKey::parse("k", not_a_key).unwrap_err().to_string();
        assert!(err.contains("not a public key"), "{err}");
        assert_eq!(
            normalize_fingerprint("de15 b144 86cd 377b 9e87  6e1a 2346 54da 9a29 6436"),
            "DE15B14486CD377B9E876E1A234654DA9A296436"
        );
    }

    proptest! {
        /// Whatever bytes follow an armor, parsing never panics.
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let body = base64::engine::general_purpose::STANDARD.encode(&bytes);
            let text = format!("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n{body}\n-----END PGP PUBLIC KEY BLOCK-----\n");
            let _ = SigningKey::parse("k", &text);
        }
    }
}
