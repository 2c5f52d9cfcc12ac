//! Extra CA certificates to trust, read strictly: reqwest accepts PEM text holding no
//! certificate at all without a word (and then trusts nothing more), so a wrong file would
//! only show up later as an unknown-authority error far from its cause.

use std::path::{Path, PathBuf};

/// A CA certificate that cannot be trusted, naming where it came from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The CA file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is PEM, but a certificate in it does not parse.
    #[error("{what}: not a PEM certificate: {source}")]
    Certificate {
        /// Where the text came from.
        what: String,
        /// The TLS library's error.
        source: reqwest::Error,
    },
    /// The text holds no certificate at all.
    #[error("{what}: not a PEM certificate (no -----BEGIN CERTIFICATE----- block)")]
    NoCertificate {
        /// Where the text came from.
        what: String,
    },
}

/// Every certificate of the PEM text `pem`; `what` names it in errors.
///
/// # Errors
/// The text holds no certificate, or one that does not parse.
pub fn certificates(pem: &[u8], what: &str) -> Result<Vec<reqwest::Certificate>, TlsError> {
    let found =
        reqwest::Certificate::from_pem_bundle(pem).map_err(|source| TlsError::Certificate {
            what: what.to_owned(),
            source,
        })?;
    if found.is_empty() {
        return Err(TlsError::NoCertificate {
            what: what.to_owned(),
        });
    }
    Ok(found)
}

/// `builder` trusting, besides the system's roots, the certificates of `ca_file` and of
/// `ca_pem`.
///
/// # Errors
/// The file cannot be read, or either holds no certificate.
pub fn trust(
    mut builder: reqwest::ClientBuilder,
    ca_file: Option<&Path>,
    ca_pem: Option<&[u8]>,
) -> Result<reqwest::ClientBuilder, TlsError> {
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
        for cert in certificates(&pem, &path.display().to_string())? {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some(pem) = ca_pem {
        for cert in certificates(pem, "the CA certificate given")? {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_without_a_certificate_is_refused() {
        let err = certificates(b"not a certificate", "ca.pem")
            .map(|c| c.len())
            .unwrap_err();
        assert!(
            matches!(&err, TlsError::NoCertificate { what } if what == "ca.pem"),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("ca.pem: not a PEM certificate"),
            "{err}"
        );
        let err = trust(
            reqwest::Client::builder(),
            Some(Path::new("/nonexistent/ca.pem")),
            None,
        )
        .map(|_| ())
        .unwrap_err();
        assert!(
            err.to_string().starts_with("/nonexistent/ca.pem: "),
            "{err}"
        );
        assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
    }
}
