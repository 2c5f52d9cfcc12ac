//! The discovery hash of a cluster CA: `sha256:` + the SHA-256 of the certificate's
//! SubjectPublicKeyInfo (DER), as `kubeadm join --discovery-token-ca-cert-hash` expects.

use sha2::{Digest, Sha256};

/// The CA certificate could not be read; the parser's own error is the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The text holds no PEM block.
    #[error("cannot read the cluster CA certificate: not PEM")]
    NotPem {
        /// The PEM parser's error.
        source: x509_parser::nom::Err<x509_parser::error::PEMError>,
    },
    /// The first PEM block is something else (a key, a request).
    #[error("cannot read the cluster CA certificate: expected a CERTIFICATE block, found {label}")]
    NotCertificate {
        /// The block's label.
        label: String,
    },
    /// The CERTIFICATE block does not hold an X.509 certificate.
    #[error("cannot read the cluster CA certificate: not an X.509 certificate")]
    NotX509 {
        /// The X.509 parser's error.
        source: x509_parser::nom::Err<x509_parser::error::X509Error>,
    },
}

/// `sha256:<hex>` of the SubjectPublicKeyInfo of the first certificate in `pem`.
///
/// # Errors
/// The text holds no parsable PEM certificate.
pub fn ca_cert_hash(pem: &[u8]) -> Result<String, CaError> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|source| CaError::NotPem { source })?;
    if block.label != "CERTIFICATE" {
        return Err(CaError::NotCertificate { label: block.label });
    }
    let cert = block
        .parse_x509()
        .map_err(|source| CaError::NotX509 { source })?;
    let spki = cert.tbs_certificate.subject_pki.raw;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(spki))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_a_certificate() {
        assert!(ca_cert_hash(b"hello").is_err());
        let key = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n";
        let err = ca_cert_hash(key).unwrap_err().to_string();
        assert!(err.contains("expected a CERTIFICATE"), "{err}");
    }

    #[test]
    fn the_parsers_error_is_kept_as_the_source() {
        use std::error::Error as _;
        let err = ca_cert_hash(b"hello").unwrap_err();
        assert!(matches!(err, CaError::NotPem { .. }), "{err:?}");
        assert!(err.source().is_some());
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = ca_cert_hash(garbage).unwrap_err();
        let CaError::NotX509 { source } = &err else {
            panic!("{err:?}")
        };
        assert!(!source.to_string().is_empty());
    }
}
