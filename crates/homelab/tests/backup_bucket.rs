//! The `[backups.s3]` bucket as `homelab backup list` reads it, against a real S3 server
//! (Versity's gateway on loopback, `testkit::s3`): the scheduled backup's copies are written
//! into the server's own storage (each object a file), then listed through the S3 API; and
//! the bucket's key read from the cluster's Secret on a real API server.
#![allow(clippy::unwrap_used)]

use homelab::backup::{BucketSnapshot, S3Credentials, bucket_list, credentials_in_cluster};
use homelab_config::BackupsS3;
use homelab_testkit::s3::S3Server;

fn config(s3: &S3Server, bucket: &str) -> BackupsS3 {
    BackupsS3 {
        endpoint: s3.endpoint.clone(),
        bucket: bucket.into(),
        prefix: "etcd".into(),
        region: "us-east-1".into(),
        plain_http: true,
    }
}

fn key(s3: &S3Server) -> S3Credentials {
    S3Credentials {
        access_key_id: s3.access_key_id.clone(),
        secret_access_key: s3.secret_access_key.clone().into(),
    }
}

#[tokio::test]
async fn the_bucket_s_copies_are_listed_newest_first_with_their_sizes() {
    let s3 = S3Server::start().unwrap();
    s3.create_bucket("lab-backups").unwrap();
    let dir = s3.root().join("lab-backups/etcd");
    std::fs::create_dir_all(&dir).unwrap();
    // Written out of order; one object of another name; one outside the prefix.
    for (name, size) in [
        ("etcd-20261201T030000Z.db", 300),
        ("etcd-20261202T030000Z.db", 200),
        ("etcd-20261130T030000Z.db", 100),
        ("notes.txt", 5),
    ] {
        std::fs::write(dir.join(name), vec![7u8; size]).unwrap();
    }
    std::fs::write(s3.root().join("lab-backups/elsewhere.db"), b"x").unwrap();

    let listed = bucket_list(&config(&s3, "lab-backups"), &key(&s3))
        .await
        .unwrap();
    let shape: Vec<(&str, u64, bool)> = listed
        .iter()
        .map(|s: &BucketSnapshot| (s.key.as_str(), s.size, s.taken.is_some()))
        .collect();
    // By the time in their names; the other object by when it was written (just now).
    assert_eq!(
        shape,
        [
            ("etcd/notes.txt", 5, false),
            ("etcd/etcd-20261202T030000Z.db", 200, true),
            ("etcd/etcd-20261201T030000Z.db", 300, true),
            ("etcd/etcd-20261130T030000Z.db", 100, true),
        ]
    );

    // A wrong secret is refused by the server, and the error says which bucket.
    let mut wrong = key(&s3);
    wrong.secret_access_key = "not-the-secret".to_owned().into();
    let err = bucket_list(&config(&s3, "lab-backups"), &wrong)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("s3://lab-backups/etcd at http://127.0.0.1:"),
        "{err}"
    );
    assert!(!err.contains("not-the-secret"), "{err}");
    // So is a bucket that does not exist.
    let err = bucket_list(&config(&s3, "no-such-bucket"), &key(&s3))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("s3://no-such-bucket/etcd"), "{err}");
    // https is the default: an http endpoint without plain_http is refused here.
    let mut strict = config(&s3, "lab-backups");
    strict.plain_http = false;
    assert!(bucket_list(&strict, &key(&s3)).await.is_err());
}

#[tokio::test]
async fn the_key_is_read_from_the_scheduled_backup_s_secret() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, PostParams};

    let (client, _plane) = homelab_testkit::control_plane::cluster().await.unwrap();
    let api: Api<Secret> = Api::namespaced(client.clone(), "kube-system");
    let name = homelab::backup::BUCKET_SECRET;
    // A cluster named by KUBECONFIG may have the Secret already: then it is read as it is.
    if api.get_opt(name).await.unwrap().is_none() {
        assert!(credentials_in_cluster(&client).await.is_none());
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name },
            "stringData": { "access_key_id": "AKIDLAB", "secret_access_key": "lab-secret-value" } }))
        .unwrap();
        api.create(&PostParams::default(), &secret).await.unwrap();
        let found = credentials_in_cluster(&client).await.unwrap();
        assert_eq!(found.access_key_id, "AKIDLAB");
        assert!(!format!("{found:?}").contains("lab-secret-value"));
        api.delete(name, &kube::api::DeleteParams::default())
            .await
            .unwrap();
    } else {
        assert!(credentials_in_cluster(&client).await.is_some());
    }
}
