//! The discovery hash of a cluster CA: `sha256:` + the SHA-256 of the certificate's
//! SubjectPublicKeyInfo (DER), as `kubeadm join --discovery-token-ca-cert-hash` expects.

use sha2::{Digest, Sha256};

/// The CA certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read the cluster CA certificate: {0}")]
pub struct CaError(String);

/// `sha256:<hex>` of the SubjectPublicKeyInfo of the first certificate in `pem`.
///
/// # Errors
/// The text holds no parsable PEM certificate.
pub fn ca_cert_hash(pem: &[u8]) -> Result<String, CaError> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| CaError(format!("not PEM: {e}")))?;
    if block.label != "CERTIFICATE" {
        return Err(CaError(format!(
            "expected a CERTIFICATE block, found {}",
            block.label
        )));
    }
    let cert = block
        .parse_x509()
        .map_err(|e| CaError(format!("not an X.509 certificate: {e}")))?;
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
}
