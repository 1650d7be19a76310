//! The S3 storage backend against a real S3 wire protocol: a throwaway `moto_server` per test
//! (`dramaq_common::testkit::MotoServer`). What the bucket holds is checked with a separate
//! object_store client and moto's multipart-upload listing, not through `S3Store` itself.

use bytes::Bytes;
use dramaq_common::config::{S3Config, S3Credentials, Secret, StorageBackend, StorageConfig};
use dramaq_common::testkit::MotoServer;
use dramaq_worker::storage::{self, Location, S3Store, Storage, StoreError};
use futures::{Stream, StreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::{Attribute, ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use std::pin::Pin;

const AK: &str = "AKIDMOTOEXAMPLE";
const SK: &str = "moto-secret-access-key-example";
const MIB: usize = 1024 * 1024;

type Body = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

fn moto() -> MotoServer {
    MotoServer::start().unwrap_or_else(|e| panic!("{e}"))
}

fn s3_config(moto: &MotoServer, bucket: &str, prefix: &str) -> S3Config {
    S3Config {
        bucket: bucket.into(),
        prefix: prefix.into(),
        region: "us-east-1".into(),
        endpoint: Some(moto.endpoint()),
        allow_http: true,
        virtual_hosted_style: false,
        access_key_env: "AWS_ACCESS_KEY_ID".into(),
        secret_key_env: "AWS_SECRET_ACCESS_KEY".into(),
        session_token_env: "AWS_SESSION_TOKEN".into(),
    }
}

fn creds() -> S3Credentials {
    S3Credentials {
        access_key_id: Secret::new(AK),
        secret_access_key: Secret::new(SK),
        session_token: None,
    }
}

fn store(moto: &MotoServer, bucket: &str, prefix: &str, max_bytes: u64) -> S3Store {
    S3Store::new(&s3_config(moto, bucket, prefix), &creds(), max_bytes).unwrap()
}

/// An independent client for looking into the bucket.
fn inspector(moto: &MotoServer, bucket: &str) -> impl ObjectStore {
    AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_endpoint(moto.endpoint())
        .with_allow_http(true)
        .with_access_key_id(AK)
        .with_secret_access_key(SK)
        .build()
        .unwrap()
}

async fn keys(moto: &MotoServer, bucket: &str) -> Vec<String> {
    let mut keys: Vec<String> = inspector(moto, bucket)
        .list(None)
        .map(|m| m.unwrap().location.to_string())
        .collect()
        .await;
    keys.sort();
    keys
}

/// Multipart uploads started and neither completed nor aborted (moto lists them unsigned).
async fn open_uploads(moto: &MotoServer, bucket: &str) -> usize {
    let xml = reqwest::get(format!("{}/{bucket}?uploads", moto.endpoint()))
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(xml.contains("ListMultipartUploadsResult"), "{xml}");
    xml.matches("<Upload>").count()
}

/// `n` chunks of `size` bytes, each with its own content, so a reordered or dropped chunk shows.
fn chunks(n: usize, size: usize) -> (Body, Vec<u8>) {
    let parts: Vec<Bytes> = (0..n)
        .map(|i| {
            Bytes::from(
                (0..size)
                    .map(|j| (j.wrapping_mul(31) ^ i.wrapping_mul(7)) as u8)
                    .collect::<Vec<u8>>(),
            )
        })
        .collect();
    let all = parts.iter().flat_map(|p| p.iter().copied()).collect();
    (
        Box::pin(futures::stream::iter(parts.into_iter().map(Ok))),
        all,
    )
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn loc(id: &str, ext: &str) -> Location {
    Location::new("moonlit", "ep01", id, ext).unwrap()
}

#[tokio::test]
async fn put_get_round_trip_with_sha256() {
    let moto = moto();
    moto.create_bucket("renders").unwrap();
    let store = store(&moto, "renders", "", 1024);
    store.check().await.unwrap();
    let location = loc("vid-1", "mp4");
    let stored = store
        .put(&location, storage::once(Bytes::from_static(b"hello")))
        .await
        .unwrap();
    assert_eq!(stored.bytes, 5);
    assert_eq!(
        stored.sha256,
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert_eq!(stored.location, location);
    assert_eq!(
        store.get(&location).await.unwrap(),
        Bytes::from_static(b"hello")
    );
    assert_eq!(keys(&moto, "renders").await, vec!["moonlit/ep01/vid-1.mp4"]);
    assert!(store.local_path(&location).is_none());

    // Stored with its media type, seen by another client.
    let got = inspector(&moto, "renders")
        .get(&"moonlit/ep01/vid-1.mp4".into())
        .await
        .unwrap();
    assert_eq!(
        got.attributes
            .get(&Attribute::ContentType)
            .map(|v| v.as_ref()),
        Some("video/mp4")
    );

    // Replacing an object replaces it whole.
    let stored = store
        .put(&location, storage::once(Bytes::from_static(b"second take")))
        .await
        .unwrap();
    assert_eq!(stored.sha256, sha256(b"second take"));
    assert_eq!(
        store.get(&location).await.unwrap(),
        Bytes::from_static(b"second take")
    );

    // A streamed copy to a file, for ffmpeg.
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("clip.mp4");
    let fetched = store.fetch_to_file(&location, &dest).await.unwrap();
    assert_eq!(fetched.sha256, stored.sha256);
    assert_eq!(fetched.bytes, 11);
    assert_eq!(std::fs::read(&dest).unwrap(), b"second take");
}

#[tokio::test]
async fn a_body_larger_than_a_part_is_a_multipart_upload_with_the_right_hash() {
    let moto = moto();
    moto.create_bucket("renders").unwrap();
    let store = store(&moto, "renders", "", 64 * MIB as u64);
    let location = loc("vid-big", "mp4");
    // 12 MiB in 1 MiB chunks: parts of 5, 5 and 2 MiB.
    let (body, all) = chunks(12, MIB);
    let stored = store.put(&location, body).await.unwrap();
    assert_eq!(stored.bytes, 12 * MIB as u64);
    assert_eq!(stored.sha256, sha256(&all));

    let head = inspector(&moto, "renders")
        .head(&"moonlit/ep01/vid-big.mp4".into())
        .await
        .unwrap();
    assert_eq!(head.size, 12 * MIB as u64);
    // S3 (and moto) give a multipart object an ETag ending in "-<number of parts>".
    let etag = head.e_tag.unwrap_or_default();
    assert!(etag.trim_matches('"').ends_with("-3"), "etag {etag}");

    let back = store.get(&location).await.unwrap();
    assert_eq!(back.len(), all.len());
    assert_eq!(sha256(&back), stored.sha256);
    let dir = tempfile::tempdir().unwrap();
    let fetched = store
        .fetch_to_file(&location, &dir.path().join("big.mp4"))
        .await
        .unwrap();
    assert_eq!(fetched.sha256, stored.sha256);
    assert_eq!(fetched.bytes, stored.bytes);
    assert_eq!(open_uploads(&moto, "renders").await, 0);
}

#[tokio::test]
async fn max_bytes_aborts_the_upload_and_leaves_no_object() {
    let moto = moto();
    moto.create_bucket("renders").unwrap();
    let store = store(&moto, "renders", "", 7 * MIB as u64);

    // Over the cap after the multipart upload started (the first 5 MiB part was sent).
    let big = loc("vid-big", "mp4");
    let (body, _) = chunks(12, MIB);
    let err = store.put(&big, body).await.unwrap_err();
    assert!(
        matches!(err, StoreError::TooLarge { max } if max == 7 * MIB as u64),
        "{err}"
    );
    assert!(err.to_string().contains("storage.max_bytes"), "{err}");
    assert_eq!(keys(&moto, "renders").await, Vec::<String>::new());
    assert_eq!(
        open_uploads(&moto, "renders").await,
        0,
        "the multipart upload was aborted"
    );

    // Over the cap before a part was full: nothing was sent at all. An earlier object at the
    // same location is left as it was.
    let small = loc("img-1", "png");
    store
        .put(&small, storage::once(Bytes::from_static(b"first")))
        .await
        .unwrap();
    let (body, _) = chunks(8, MIB);
    let err = store.put(&small, body).await.unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
    assert_eq!(keys(&moto, "renders").await, vec!["moonlit/ep01/img-1.png"]);
    assert_eq!(
        store.get(&small).await.unwrap(),
        Bytes::from_static(b"first")
    );
    assert_eq!(open_uploads(&moto, "renders").await, 0);
}

#[tokio::test]
async fn a_body_error_mid_upload_aborts_it() {
    let moto = moto();
    moto.create_bucket("renders").unwrap();
    let store = store(&moto, "renders", "", 64 * MIB as u64);
    let (good, _) = chunks(7, MIB);
    let body: Body = Box::pin(good.chain(futures::stream::once(async {
        Err("connection reset by provider".to_string())
    })));
    let err = store.put(&loc("vid-2", "mp4"), body).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Body(ref m) if m.contains("reset")),
        "{err}"
    );
    assert_eq!(keys(&moto, "renders").await, Vec::<String>::new());
    assert_eq!(open_uploads(&moto, "renders").await, 0);
}

#[tokio::test]
async fn the_prefix_is_honoured() {
    let moto = moto();
    moto.create_bucket("shared").unwrap();
    let store = store(&moto, "shared", "/studio-a/renders/", 1024);
    assert_eq!(store.url(), "s3://shared/studio-a/renders");
    store.check().await.unwrap();
    let location = loc("voc-1", "wav");
    store
        .put(&location, storage::once(Bytes::from_static(b"RIFF")))
        .await
        .unwrap();
    assert_eq!(
        keys(&moto, "shared").await,
        vec!["studio-a/renders/moonlit/ep01/voc-1.wav"]
    );
    assert_eq!(
        store.get(&location).await.unwrap(),
        Bytes::from_static(b"RIFF")
    );
    // The same location without the prefix is another object, which does not exist.
    let unprefixed = self::store(&moto, "shared", "", 1024);
    let err = unprefixed.get(&location).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn a_missing_bucket_or_object_is_a_clear_error() {
    let moto = moto();
    let store = store(&moto, "no-such-bucket", "", 1024);
    let err = store.check().await.unwrap_err().to_string();
    assert!(err.contains("s3://no-such-bucket"), "{err}");
    assert!(err.contains("NoSuchBucket"), "{err}");

    let location = loc("vid-1", "mp4");
    let err = store
        .put(&location, storage::once(Bytes::from_static(b"x")))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("s3://no-such-bucket/moonlit/ep01/vid-1.mp4"),
        "{err}"
    );
    assert!(err.contains("NoSuchBucket"), "{err}");

    moto.create_bucket("renders").unwrap();
    let store = self::store(&moto, "renders", "", 1024);
    let err = store.get(&location).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("s3://renders/moonlit/ep01/vid-1.mp4"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_credentials_are_a_clear_error_that_holds_no_secret() {
    let moto = MotoServer::start_checking_credentials("renders").unwrap_or_else(|e| panic!("{e}"));
    let store = store(&moto, "renders", "", 1024);
    let check = store.check().await.unwrap_err().to_string();
    let location = loc("vid-1", "mp4");
    let put = store
        .put(&location, storage::once(Bytes::from_static(b"x")))
        .await
        .unwrap_err()
        .to_string();
    let get = store.get(&location).await.unwrap_err().to_string();
    for err in [&check, &put, &get] {
        assert!(err.contains("s3://renders"), "{err}");
        assert!(err.contains("InvalidAccessKeyId"), "{err}");
        assert!(!err.contains(SK), "secret in {err}");
        assert!(!err.contains(AK), "access key id in {err}");
    }
    assert!(put.contains("moonlit/ep01/vid-1.mp4"), "{put}");
}

#[tokio::test]
async fn from_config_selects_the_backend_and_reads_the_named_variables() {
    let moto = moto();
    moto.create_bucket("renders").unwrap();
    // Variable names unique to this test, so parallel tests cannot race on them.
    let mut s3 = s3_config(&moto, "renders", "p");
    s3.access_key_env = "DRAMAQ_S3TEST_AK".into();
    s3.secret_key_env = "DRAMAQ_S3TEST_SK".into();
    s3.session_token_env = "DRAMAQ_S3TEST_TOKEN".into();
    let cfg = StorageConfig {
        backend: StorageBackend::S3,
        dir: "/nonexistent/never-written".into(),
        max_bytes: 1024,
        s3: Some(s3),
    };
    let err = storage::from_config(&cfg).await.err().unwrap();
    assert!(
        format!("{err:#}").contains("DRAMAQ_S3TEST_AK (named by storage.s3.access_key_env)"),
        "{err:#}"
    );
    std::env::set_var("DRAMAQ_S3TEST_AK", AK);
    std::env::set_var("DRAMAQ_S3TEST_SK", SK);
    let store = storage::from_config(&cfg).await.unwrap();
    let location = loc("img-1", "png");
    store
        .put(&location, storage::once(Bytes::from_static(b"PNG")))
        .await
        .unwrap();
    assert_eq!(
        keys(&moto, "renders").await,
        vec!["p/moonlit/ep01/img-1.png"]
    );
    assert!(!std::path::Path::new("/nonexistent/never-written").exists());

    // A bucket that does not exist stops startup, naming it.
    let mut missing = cfg.clone();
    missing.s3.as_mut().unwrap().bucket = "not-there".into();
    let err = format!("{:#}", storage::from_config(&missing).await.err().unwrap());
    assert!(
        err.contains("s3://not-there/p") && err.contains("NoSuchBucket"),
        "{err}"
    );
}
