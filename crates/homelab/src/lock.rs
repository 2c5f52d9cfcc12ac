//! `homelab.lock`: the sha256 of every artifact homelab downloads, recorded on first use and
//! checked on every later download, as `Cargo.lock` does for crates. An explicit pin in
//! `homelab.toml` wins over the lock; `homelab lock --update` records new digests after a
//! version change.
//!
//! ```
//! # async fn example() -> Result<(), homelab::lock::ArtifactError> {
//! use homelab::lock::{LockFile, fetch};
//! let mut lock = LockFile::load("homelab.lock".as_ref())?;
//! let http = reqwest::Client::new();
//! let manifest = fetch(&http, "https://example.invalid/kube-flannel.yml", None, &mut lock, false).await?;
//! if manifest.recorded {
//!     println!("recorded sha256 {} in {}", manifest.sha256, lock.path().display());
//! }
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The lock file's name, beside `homelab.toml`.
pub const LOCK_FILE_NAME: &str = "homelab.lock";

const HEADER: &str = "# homelab.lock: the sha256 of every artifact homelab downloaded, recorded on first use.\n\
# Every later download must match. Commit it beside homelab.toml; after changing a version,\n\
# run `homelab lock --update` and review the new digests.\n";

/// One artifact's recorded digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locked {
    /// Where it is downloaded from.
    pub url: String,
    /// Its sha256, in hex.
    pub sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct LockText {
    version: u32,
    #[serde(default, rename = "artifact")]
    artifacts: Vec<Locked>,
}

/// The lock file, as read from disk (empty when it does not exist yet).
#[derive(Debug, Clone)]
pub struct LockFile {
    path: PathBuf,
    artifacts: Vec<Locked>,
}

/// Why an artifact could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// The download failed on the way.
    #[error("downloading {url}: {source}")]
    Download {
        /// The artifact.
        url: String,
        /// The HTTP client's error.
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("downloading {url}: HTTP {status}")]
    Status {
        /// The artifact.
        url: String,
        /// The status.
        status: reqwest::StatusCode,
    },
    /// A local artifact file cannot be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The artifact is not what was pinned or recorded.
    #[error("{url} has sha256 {actual}, but {origin} expects {expected}: refused. {hint}")]
    Mismatch {
        /// The artifact.
        url: String,
        /// The digest pinned or recorded.
        expected: String,
        /// The digest of what was downloaded.
        actual: String,
        /// Where `expected` comes from.
        origin: String,
        /// What to do.
        hint: String,
    },
    /// The lock file cannot be read, parsed or written.
    #[error("{}: {source}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why: the system's error, TOML's, or an unknown version.
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl LockFile {
    /// The lock file of a configuration: beside the file, or `./homelab.lock` for the
    /// embedded default.
    pub fn path_for(config_file: Option<&Path>) -> PathBuf {
        config_file.and_then(Path::parent).map_or_else(
            || PathBuf::from(LOCK_FILE_NAME),
            |dir| dir.join(LOCK_FILE_NAME),
        )
    }

    /// Reads `path`; a missing file is an empty lock.
    ///
    /// # Errors
    /// The file exists but cannot be read or is not a lock file.
    pub fn load(path: &Path) -> Result<Self, ArtifactError> {
        let fail =
            |source: Box<dyn std::error::Error + Send + Sync + 'static>| ArtifactError::Lock {
                path: path.to_owned(),
                source,
            };
        let artifacts = match std::fs::read_to_string(path) {
            Ok(text) => {
                let parsed: LockText = toml::from_str(&text).map_err(|e| fail(e.into()))?;
                if parsed.version != 1 {
                    return Err(fail(
                        format!(
                            "lock file version {} is not known to this homelab (1 is)",
                            parsed.version
                        )
                        .into(),
                    ));
                }
                parsed.artifacts
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(fail(e.into())),
        };
        Ok(Self {
            path: path.to_owned(),
            artifacts,
        })
    }

    /// Where the lock lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recorded artifacts.
    pub fn artifacts(&self) -> &[Locked] {
        &self.artifacts
    }

    /// The digest recorded for `url`.
    pub fn get(&self, url: &str) -> Option<&str> {
        self.artifacts
            .iter()
            .find(|a| a.url == url)
            .map(|a| a.sha256.as_str())
    }

    /// Records (or replaces) the digest of `url`.
    pub fn record(&mut self, url: &str, sha256: &str) {
        match self.artifacts.iter_mut().find(|a| a.url == url) {
            Some(a) => sha256.clone_into(&mut a.sha256),
            None => self.artifacts.push(Locked {
                url: url.to_owned(),
                sha256: sha256.to_owned(),
            }),
        }
        self.artifacts.sort_by(|a, b| a.url.cmp(&b.url));
    }

    /// Writes the lock (through a temporary file, so a crash never leaves half a lock).
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn save(&self) -> Result<(), ArtifactError> {
        let fail =
            |source: Box<dyn std::error::Error + Send + Sync + 'static>| ArtifactError::Lock {
                path: self.path.clone(),
                source,
            };
        let body = toml::to_string_pretty(&LockText {
            version: 1,
            artifacts: self.artifacts.clone(),
        })
        .map_err(|e| fail(e.into()))?;
        let tmp = self.path.with_extension("lock.tmp");
        std::fs::write(&tmp, format!("{HEADER}\n{body}")).map_err(|e| fail(e.into()))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| fail(e.into()))
    }
}

/// An artifact, checked.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its sha256, in hex.
    pub sha256: String,
    /// Whether its digest was recorded in the lock by this call (first use, or `update`).
    pub recorded: bool,
}

/// The sha256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn download(http: &reqwest::Client, source: &str) -> Result<Vec<u8>, ArtifactError> {
    if !(source.starts_with("https://") || source.starts_with("http://")) {
        return std::fs::read(source).map_err(|e| ArtifactError::Read {
            path: source.into(),
            source: e,
        });
    }
    let fail = |e: reqwest::Error| ArtifactError::Download {
        url: source.to_owned(),
        source: e,
    };
    let response = http.get(source).send().await.map_err(fail)?;
    let status = response.status();
    if !status.is_success() {
        return Err(ArtifactError::Status {
            url: source.to_owned(),
            status,
        });
    }
    Ok(response.bytes().await.map_err(fail)?.to_vec())
}

/// Downloads `source` (an `http(s)://` URL, or a local file for offline installs) and checks
/// it: against `pin` (from `homelab.toml`) when there is one; else against the digest the
/// lock recorded; else, or with `update`, records its digest in the lock and saves it.
///
/// # Errors
/// The download fails, the digest differs from the pin or the lock (the error names both),
/// or the lock cannot be written.
pub async fn fetch(
    http: &reqwest::Client,
    source: &str,
    pin: Option<&str>,
    lock: &mut LockFile,
    update: bool,
) -> Result<Fetched, ArtifactError> {
    let bytes = download(http, source).await?;
    let actual = sha256_hex(&bytes);
    let mismatch = |expected: &str, origin: String, hint: &str| ArtifactError::Mismatch {
        url: source.to_owned(),
        expected: expected.to_owned(),
        actual: actual.clone(),
        origin,
        hint: hint.to_owned(),
    };
    if let Some(pin) = pin {
        let pin = pin.trim().to_ascii_lowercase();
        if pin != actual {
            return Err(mismatch(
                &pin,
                "the pin in homelab.toml".into(),
                "Check the release; if it really changed, update the pin.",
            ));
        }
        return Ok(Fetched {
            bytes,
            sha256: actual,
            recorded: false,
        });
    }
    match lock.get(source) {
        Some(locked) if !update && locked != actual => Err(mismatch(
            locked,
            lock.path.display().to_string(),
            "If you changed its version on purpose, run `homelab lock --update` and review the new digest.",
        )),
        Some(locked) if locked == actual => Ok(Fetched {
            bytes,
            sha256: actual,
            recorded: false,
        }),
        _ => {
            lock.record(source, &actual);
            lock.save()?;
            Ok(Fetched {
                bytes,
                sha256: actual,
                recorded: true,
            })
        }
    }
}
