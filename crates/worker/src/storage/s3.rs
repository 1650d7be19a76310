//! Output storage in an S3 bucket (AWS, or an S3-compatible server: MinIO, R2, Ceph, moto).
//!
//! Workers on many hosts need one place for their outputs that does not depend on a shared
//! mount; a bucket is that place. [`S3Store`] keeps the [`Storage`] contract of the local
//! directory: the body is streamed, hashed (sha256) and size-capped on the way, and the object
//! becomes visible only once it is whole. A small body (under one part) is a single `PUT`, which
//! S3 applies atomically; a larger one is a multipart upload, whose object appears only when
//! `CompleteMultipartUpload` succeeds — the bucket's equivalent of the local atomic rename. On any
//! failure (body error, `storage.max_bytes` exceeded, a part refused) the upload is aborted, so
//! no partial object is ever visible and no parts are left behind. Only a process killed
//! mid-upload can leave parts of an unfinished upload (still invisible); a bucket lifecycle rule
//! (`AbortIncompleteMultipartUpload`) reclaims them.
//!
//! Signing (SigV4), multipart, retries of transient errors and S3's XML errors are
//! `object_store`'s job; this file maps them onto [`StoreError`] with the bucket and key named
//! and the credentials scrubbed from every message.

use super::{Location, Storage, StoreError, Stored};
use async_trait::async_trait;
use bytes::Bytes;
use dramaq_common::config::{S3Config, S3Credentials};
use futures::{Stream, StreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as KeyPath;
use object_store::{
    Attribute, Attributes, BackoffConfig, MultipartUpload, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, RetryConfig,
};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;
use tracing::warn;

/// S3's smallest part (all parts but the last); also R2's rule that parts be of one size is met
/// because every part but the last is exactly `part_size`.
const MIN_PART: usize = 5 * 1024 * 1024;
/// S3's largest part count per upload.
const MAX_PARTS: u64 = 10_000;
/// Parts uploading at once per object. With the part being filled, an upload holds at most
/// (this + 1) parts in memory, whatever the body's size: a fast provider download cannot outrun
/// a slow bucket into memory.
const PARTS_IN_FLIGHT: usize = 2;
/// Longest error text kept: S3's XML error bodies are short, but the message lands in the task
/// record's error history.
const MAX_ERROR_CHARS: usize = 600;

pub struct S3Store {
    store: AmazonS3,
    bucket: String,
    /// Key prefix without surrounding slashes; empty for none.
    prefix: String,
    max_bytes: u64,
    part_size: usize,
    /// Credential values to scrub from error text (S3 echoes the access key id in some errors).
    redact: Vec<String>,
}

impl S3Store {
    /// Build from the config, reading the credentials from the environment variables it names.
    pub fn from_config(cfg: &S3Config, max_bytes: u64) -> anyhow::Result<S3Store> {
        let creds = cfg.credentials()?;
        Ok(S3Store::new(cfg, &creds, max_bytes)?)
    }

    pub fn new(
        cfg: &S3Config,
        creds: &S3Credentials,
        max_bytes: u64,
    ) -> Result<S3Store, StoreError> {
        let mut redact = vec![
            creds.access_key_id.expose().to_string(),
            creds.secret_access_key.expose().to_string(),
        ];
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_access_key_id(creds.access_key_id.expose())
            .with_secret_access_key(creds.secret_access_key.expose())
            .with_allow_http(cfg.allow_http)
            .with_virtual_hosted_style_request(cfg.virtual_hosted_style)
            // Fewer and shorter retries than object_store's default (10 over 3 minutes): a
            // failed store is retried as a task with backoff in Redis, and a worker should not
            // sit on a slot for minutes while the bucket is down.
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 4,
                retry_timeout: Duration::from_secs(60),
            });
        if let Some(token) = &creds.session_token {
            builder = builder.with_token(token.expose());
            redact.push(token.expose().to_string());
        }
        if let Some(endpoint) = &cfg.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        redact.retain(|s| s.len() >= 4);
        let store = builder
            .build()
            .map_err(|e| StoreError::Config(describe(&redact, &e)))?;
        Ok(S3Store {
            store,
            bucket: cfg.bucket.clone(),
            prefix: cfg.prefix_trimmed().to_string(),
            max_bytes,
            part_size: part_size(max_bytes),
            redact,
        })
    }

    /// `s3://bucket/prefix`, for logs.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// One list request under the prefix, at startup: a wrong bucket, region, endpoint or
    /// credentials should stop the worker before it pays for renders it cannot store.
    pub async fn check(&self) -> Result<(), StoreError> {
        let prefix = (!self.prefix.is_empty()).then(|| KeyPath::from(self.prefix.as_str()));
        self.store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map(|_| ())
            .map_err(|e| self.error("list", &self.prefix, e))
    }

    /// The object key of a location: `<prefix>/<season>/<group>/<task>.<ext>`.
    pub fn key(&self, location: &Location) -> KeyPath {
        // Location components passed `is_safe_component` and the prefix passed config
        // validation, so the key needs no escaping.
        if self.prefix.is_empty() {
            KeyPath::from(location.as_str())
        } else {
            KeyPath::from(format!("{}/{}", self.prefix, location.as_str()))
        }
    }

    fn error(&self, op: &'static str, key: &str, e: object_store::Error) -> StoreError {
        let message = self.describe(&e);
        match e {
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                op,
                bucket: self.bucket.clone(),
                key: key.to_string(),
                message,
            },
            _ => StoreError::Object {
                op,
                bucket: self.bucket.clone(),
                key: key.to_string(),
                message,
            },
        }
    }

    fn describe(&self, e: &(dyn std::error::Error + 'static)) -> String {
        describe(&self.redact, e)
    }

    fn attributes(location: &Location) -> Attributes {
        let mut attrs = Attributes::new();
        // So a browser or CDN serves the object as what it is.
        let content_type = match location.as_str().rsplit('.').next() {
            Some("mp4") => Some("video/mp4"),
            Some("png") => Some("image/png"),
            Some("jpg") | Some("jpeg") => Some("image/jpeg"),
            Some("webp") => Some("image/webp"),
            Some("wav") => Some("audio/wav"),
            Some("mp3") => Some("audio/mpeg"),
            Some("json") => Some("application/json"),
            _ => None,
        };
        if let Some(ct) = content_type {
            attrs.insert(Attribute::ContentType, ct.into());
        }
        attrs
    }

    async fn abort(&self, key: &KeyPath, upload: &mut Upload) {
        upload.parts.shutdown().await;
        if let Err(e) = upload.upload.abort().await {
            warn!(
                bucket = %self.bucket,
                key = %key,
                error = %self.describe(&e),
                "could not abort a multipart upload; its parts stay until the bucket's lifecycle rule removes them"
            );
        }
    }
}

/// The error and its causes as one line, without credentials, bounded in length.
fn describe(redact: &[String], e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    // S3's XML error body: its code and message say it all; request ids are noise here.
    if let Some(at) = text.find("<?xml") {
        let tag = |name: &str| {
            let open = format!("<{name}>");
            let start = text[at..].find(&open)? + at + open.len();
            let end = text[start..].find(&format!("</{name}>"))? + start;
            Some(text[start..end].to_string())
        };
        if let (Some(code), Some(message)) = (tag("Code"), tag("Message")) {
            text = format!("{}{code}: {message}", &text[..at]);
        }
    }
    for secret in redact {
        text = text.replace(secret.as_str(), "[redacted]");
    }
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() > MAX_ERROR_CHARS {
        let mut cut: String = text.chars().take(MAX_ERROR_CHARS).collect();
        cut.push('…');
        cut
    } else {
        text
    }
}

/// At least S3's minimum, and large enough that `max_bytes` fits in S3's part count.
fn part_size(max_bytes: u64) -> usize {
    let needed = max_bytes.div_ceil(MAX_PARTS);
    usize::try_from(needed).unwrap_or(usize::MAX).max(MIN_PART)
}

/// A multipart upload under way: the parts are spawned so they upload while the body streams.
struct Upload {
    upload: Box<dyn MultipartUpload>,
    parts: JoinSet<object_store::Result<()>>,
}

impl Upload {
    async fn wait_for_room(&mut self, room: usize) -> object_store::Result<()> {
        while self.parts.len() > room {
            match self.parts.join_next().await {
                Some(Ok(r)) => r?,
                Some(Err(join)) => {
                    return Err(object_store::Error::JoinError { source: join });
                }
                None => break,
            }
        }
        Ok(())
    }
}

/// Cuts the body into parts of exactly `part_size` bytes (the last may be shorter).
struct Parts {
    part_size: usize,
    pending: Vec<Bytes>,
    pending_len: usize,
}

impl Parts {
    fn new(part_size: usize) -> Parts {
        Parts {
            part_size,
            pending: Vec::new(),
            pending_len: 0,
        }
    }

    /// Add a chunk; full parts are appended to `out` (chunks are split without copying).
    fn push(&mut self, mut chunk: Bytes, out: &mut Vec<PutPayload>) {
        while !chunk.is_empty() {
            let room = self.part_size - self.pending_len;
            if chunk.len() < room {
                self.pending_len += chunk.len();
                self.pending.push(chunk);
                return;
            }
            self.pending.push(chunk.split_to(room));
            self.pending_len = 0;
            out.push(std::mem::take(&mut self.pending).into_iter().collect());
        }
    }

    /// What is left: the last (short) part, or the whole body when it never filled a part.
    fn rest(&mut self) -> Option<PutPayload> {
        self.pending_len = 0;
        let rest = std::mem::take(&mut self.pending);
        (!rest.is_empty()).then(|| rest.into_iter().collect())
    }
}

#[async_trait]
impl Storage for S3Store {
    async fn put(
        &self,
        location: &Location,
        mut body: Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>,
    ) -> Result<Stored, StoreError> {
        let key = self.key(location);
        let mut hasher = Sha256::new();
        let mut total: u64 = 0;
        let mut parts = Parts::new(self.part_size);
        let mut full = Vec::new();
        let mut upload: Option<Upload> = None;
        let streamed: Result<(), StoreError> = loop {
            let chunk = match body.next().await {
                None => break Ok(()),
                Some(Err(e)) => break Err(StoreError::Body(e)),
                Some(Ok(chunk)) => chunk,
            };
            total += chunk.len() as u64;
            if total > self.max_bytes {
                break Err(StoreError::TooLarge {
                    max: self.max_bytes,
                });
            }
            hasher.update(&chunk);
            parts.push(chunk, &mut full);
            if full.is_empty() {
                continue;
            }
            if upload.is_none() {
                let opts = PutMultipartOptions {
                    attributes: Self::attributes(location),
                    ..Default::default()
                };
                match self.store.put_multipart_opts(&key, opts).await {
                    Ok(u) => {
                        upload = Some(Upload {
                            upload: u,
                            parts: JoinSet::new(),
                        })
                    }
                    Err(e) => break Err(self.error("start multipart upload", key.as_ref(), e)),
                }
            }
            let up = upload.as_mut().expect("started above");
            let mut failed = None;
            for part in full.drain(..) {
                if let Err(e) = up.wait_for_room(PARTS_IN_FLIGHT - 1).await {
                    failed = Some(e);
                    break;
                }
                up.parts.spawn(up.upload.put_part(part));
            }
            if let Some(e) = failed {
                break Err(self.error("upload part", key.as_ref(), e));
            }
        };
        if let Err(e) = streamed {
            if let Some(mut up) = upload {
                self.abort(&key, &mut up).await;
            }
            return Err(e);
        }
        match upload {
            None => {
                let opts = PutOptions {
                    attributes: Self::attributes(location),
                    ..Default::default()
                };
                let payload = parts.rest().unwrap_or_default();
                self.store
                    .put_opts(&key, payload, opts)
                    .await
                    .map_err(|e| self.error("put", key.as_ref(), e))?;
            }
            Some(mut up) => {
                if let Some(last) = parts.rest() {
                    up.parts.spawn(up.upload.put_part(last));
                }
                let finished = match up.wait_for_room(0).await {
                    Ok(()) => up
                        .upload
                        .complete()
                        .await
                        .map_err(|e| self.error("complete multipart upload", key.as_ref(), e)),
                    Err(e) => Err(self.error("upload part", key.as_ref(), e)),
                };
                if let Err(e) = finished {
                    self.abort(&key, &mut up).await;
                    return Err(e);
                }
            }
        }
        Ok(Stored {
            location: location.clone(),
            sha256: hex::encode(hasher.finalize()),
            bytes: total,
        })
    }

    async fn get(&self, location: &Location) -> Result<Bytes, StoreError> {
        let key = self.key(location);
        let result = self
            .store
            .get(&key)
            .await
            .map_err(|e| self.error("get", key.as_ref(), e))?;
        result
            .bytes()
            .await
            .map_err(|e| self.error("get", key.as_ref(), e))
    }

    async fn fetch_to_file(&self, location: &Location, dest: &Path) -> Result<Stored, StoreError> {
        let key = self.key(location);
        let io = |source| StoreError::Io {
            path: dest.display().to_string(),
            source,
        };
        let mut stream = self
            .store
            .get(&key)
            .await
            .map_err(|e| self.error("get", key.as_ref(), e))?
            .into_stream();
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut total: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.error("get", key.as_ref(), e))?;
            total += chunk.len() as u64;
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        Ok(Stored {
            location: location.clone(),
            sha256: hex::encode(hasher.finalize()),
            bytes: total,
        })
    }

    fn local_path(&self, _: &Location) -> Option<PathBuf> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(part_size: usize, chunks: &[usize]) -> (Vec<usize>, Option<usize>) {
        let mut parts = Parts::new(part_size);
        let mut full = Vec::new();
        for (i, n) in chunks.iter().enumerate() {
            parts.push(Bytes::from(vec![i as u8; *n]), &mut full);
        }
        (
            full.iter().map(|p| p.content_length()).collect(),
            parts.rest().map(|p| p.content_length()),
        )
    }

    #[test]
    fn parts_are_exactly_part_size_but_the_last() {
        assert_eq!(cut(10, &[3, 3, 3]), (vec![], Some(9)));
        assert_eq!(cut(10, &[10]), (vec![10], None));
        assert_eq!(cut(10, &[4, 4, 4, 4, 4]), (vec![10, 10], None));
        assert_eq!(cut(10, &[25, 1]), (vec![10, 10], Some(6)));
        assert_eq!(cut(10, &[]), (vec![], None));
    }

    #[test]
    fn split_parts_keep_the_bytes_in_order() {
        let mut parts = Parts::new(4);
        let mut full = Vec::new();
        parts.push(Bytes::from_static(b"abcdef"), &mut full);
        parts.push(Bytes::from_static(b"ghij"), &mut full);
        let mut all: Vec<u8> = Vec::new();
        for p in full.into_iter().chain(parts.rest()) {
            for b in p.iter() {
                all.extend_from_slice(b);
            }
        }
        assert_eq!(all, b"abcdefghij");
    }

    #[test]
    fn error_text_is_condensed_and_holds_no_credentials() {
        let redact = vec!["AKIAEXAMPLE".to_string(), "s3cr3t-value".to_string()];
        let e = std::io::Error::other(
            "Error performing PUT http://h/b/k - Server returned non-2xx status code: 403 \
             Forbidden: <?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>\
             <Message>Bad signature</Message><AWSAccessKeyId>AKIAEXAMPLE</AWSAccessKeyId>\
             <RequestId>R</RequestId></Error>",
        );
        let text = describe(&redact, &e);
        assert_eq!(
            text,
            "Error performing PUT http://h/b/k - Server returned non-2xx status code: 403 \
             Forbidden: SignatureDoesNotMatch: Bad signature"
        );
        let e = std::io::Error::other("key AKIAEXAMPLE secret s3cr3t-value\nnext line");
        assert_eq!(
            describe(&redact, &e),
            "key [redacted] secret [redacted] next line"
        );
        let long = std::io::Error::other("x".repeat(5000));
        assert_eq!(describe(&[], &long).chars().count(), MAX_ERROR_CHARS + 1);
    }

    #[test]
    fn part_size_fits_max_bytes_in_ten_thousand_parts() {
        assert_eq!(part_size(512 * 1024 * 1024), MIN_PART);
        assert_eq!(part_size(0), MIN_PART);
        let big = 100 * 1024 * 1024 * 1024u64;
        assert!(part_size(big) as u64 * MAX_PARTS >= big);
    }
}
