//! The discovery hash computed here equals the one kubeadm's documentation derives with
//! openssl, for RSA and EC certificate authorities made by openssl.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn openssl(args: &[&str], dir: &std::path::Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The pipeline from kubeadm's documentation (with `pkey`, which also reads EC keys).
fn documented_hash(dir: &std::path::Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg("openssl x509 -pubkey -noout -in ca.crt | openssl pkey -pubin -outform der 2>/dev/null | openssl dgst -sha256 -hex | sed 's/^.* //'")
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    format!("sha256:{}", String::from_utf8(out.stdout).unwrap().trim())
}

#[test]
fn matches_openssl_for_rsa_and_ec() {
    for keygen in [
        vec![
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "ca.key",
        ],
        vec![
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ca.key",
        ],
    ] {
        let dir = tempfile::tempdir().unwrap();
        openssl(&keygen, dir.path());
        openssl(
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-subj",
                "/CN=kubernetes",
                "-days",
                "1",
                "-out",
                "ca.crt",
            ],
            dir.path(),
        );
        let pem = std::fs::read(dir.path().join("ca.crt")).unwrap();
        let ours = kubeadm_boot::ca::ca_cert_hash(&pem).unwrap();
        assert_eq!(ours, documented_hash(dir.path()), "{keygen:?}");
        assert_eq!(ours.len(), "sha256:".len() + 64);
    }
}
