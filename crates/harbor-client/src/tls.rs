//! Extra CA certificates to trust, read strictly: reqwest accepts PEM text holding no
//! certificate at all without a word (and then trusts nothing more), so a wrong file would
//! only show up later as an unknown-authority error far from its cause.

use std::path::Path;

/// Every certificate of the PEM text `pem`; `what` names it in errors.
///
/// # Errors
/// The text holds no certificate, or one that does not parse.
pub fn certificates(pem: &[u8], what: &str) -> Result<Vec<reqwest::Certificate>, String> {
    let found = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|e| format!("{what}: not a PEM certificate: {e}"))?;
    if found.is_empty() {
        return Err(format!(
            "{what}: not a PEM certificate (no -----BEGIN CERTIFICATE----- block)"
        ));
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
) -> Result<reqwest::ClientBuilder, String> {
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
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
        assert!(err.starts_with("ca.pem: not a PEM certificate"), "{err}");
        let err = trust(
            reqwest::Client::builder(),
            Some(Path::new("/nonexistent/ca.pem")),
            None,
        )
        .map(|_| ())
        .unwrap_err();
        assert!(err.starts_with("/nonexistent/ca.pem: "), "{err}");
    }
}
