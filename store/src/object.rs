//! A dataset on an S3-compatible object store, through the `object_store` crate (the one
//! DataFusion reads through; its S3 client comes with this crate's `s3` feature). The protocol's primitives map one to one: put-if-absent is a
//! `PUT` with `If-None-Match: *` (`PutMode::Create`), get a `GET`, list a `LIST` with a
//! delimiter, delete a `DELETE`. Configured from the standard AWS environment variables
//! (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ALLOW_HTTP`, ...).
//!
//! The store is synchronous; every request runs on one process-wide tokio runtime (its HTTP
//! connections live there too, so DataFusion's and the target stream's runtimes can share a
//! client) and the caller waits for it.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};

use crate::backend::{Backend, Stat};
use crate::error::{Result, StoreError};
use crate::location::join_key;

/// A dataset (or store) at `s3://bucket/key`.
#[derive(Debug, Clone)]
pub struct ObjectDir {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    key: String,
}

impl ObjectDir {
    /// The prefix `key` of `bucket`, with the client shared by every location in the bucket.
    pub fn s3(bucket: &str, key: &str) -> Result<ObjectDir> {
        Ok(ObjectDir {
            store: s3_client(bucket)?,
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }

    /// The client, for DataFusion's runtime to read through (`s3://BUCKET` is its URL).
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The object key of `rel` inside this location.
    pub fn object_path(&self, rel: &str) -> ObjectPath {
        ObjectPath::from(join_key(&self.key, rel))
    }

    fn url(&self, rel: &str) -> String {
        format!("s3://{}/{}", self.bucket, join_key(&self.key, rel))
    }

    /// Runs a request on the shared runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        rel: &str,
        request: impl FnOnce(Arc<dyn ObjectStore>, ObjectPath) -> BoxedRequest<T>,
    ) -> Result<T> {
        let future = request(self.store.clone(), self.object_path(rel));
        let handle = runtime().spawn(future);
        futures::executor::block_on(handle)
            .unwrap_or_else(|e| Err(object_store::Error::JoinError { source: e }))
            .map_err(|e| self.error(rel, e))
    }

    fn error(&self, rel: &str, e: object_store::Error) -> StoreError {
        StoreError::ObjectStore {
            path: PathBuf::from(self.url(rel)),
            detail: explain(&self.bucket, &e),
        }
    }

    /// Reads `rel` into memory; `None` when it does not exist.
    fn get_bytes(&self, rel: &str) -> Result<Option<Bytes>> {
        self.run(rel, |s, p| {
            Box::pin(async move {
                match s.get(&p).await {
                    Ok(got) => got.bytes().await.map(Some),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
        })
    }
}

type BoxedRequest<T> =
    std::pin::Pin<Box<dyn Future<Output = object_store::Result<T>> + Send + 'static>>;

impl Backend for ObjectDir {
    fn locate(&self, rel: &str) -> PathBuf {
        PathBuf::from(self.url(rel))
    }

    fn put_if_absent(&self, rel: &str, bytes: &[u8]) -> Result<bool> {
        let payload = Bytes::copy_from_slice(bytes);
        self.run(rel, |s, p| {
            Box::pin(async move {
                let options = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                match s.put_opts(&p, payload.into(), options).await {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                    Err(e) => Err(e),
                }
            })
        })
    }

    fn get(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.get_bytes(rel)?.map(|b| b.to_vec()))
    }

    fn list(&self, rel: &str) -> Result<Vec<String>> {
        let names = self.run(rel, |s, p| {
            Box::pin(async move {
                let prefix = (!p.as_ref().is_empty()).then_some(&p);
                let listed = s.list_with_delimiter(prefix).await?;
                let dirs = listed.common_prefixes.into_iter();
                let files = listed.objects.into_iter().map(|o| o.location);
                Ok(dirs
                    .chain(files)
                    .filter_map(|l| l.filename().map(str::to_string))
                    .collect::<Vec<_>>())
            })
        })?;
        Ok(names)
    }

    fn delete(&self, rel: &str) -> Result<()> {
        self.run(rel, |s, p| {
            Box::pin(async move {
                match s.delete(&p).await {
                    Err(object_store::Error::NotFound { .. }) => Ok(()),
                    other => other,
                }
            })
        })
    }

    fn stat(&self, rel: &str) -> Result<Option<Stat>> {
        self.run(rel, |s, p| {
            Box::pin(async move {
                match s.head(&p).await {
                    Ok(meta) => Ok(Some(Stat {
                        bytes: meta.size,
                        modified: SystemTime::from(meta.last_modified),
                        regular: true,
                        version: meta.e_tag.unwrap_or_default(),
                    })),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
        })
    }

    fn read_bounded(&self, rel: &str, limit: u64) -> Result<(Bytes, bool)> {
        let (bytes, size) = self.run(rel, move |s, p| {
            Box::pin(async move {
                let got = s.get(&p).await?;
                let size = got.meta.size;
                if size > limit {
                    // Never more than the manifest's byte count, whatever the object holds.
                    return Ok((s.get_range(&p, 0..limit).await?, size));
                }
                Ok((got.bytes().await?, size))
            })
        })?;
        Ok((bytes, size > limit))
    }

    fn read_tail(&self, rel: &str, size: u64, len: u64) -> Result<Bytes> {
        let start = size.saturating_sub(len);
        self.run(rel, move |s, p| {
            Box::pin(async move { s.get_range(&p, start..size).await })
        })
    }

    fn freshen(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        // An object's time cannot be set: an old one (a dead writer's, which gc may be about
        // to collect) is put again, so that it is as young as a file just published. A young
        // one needs nothing, and leaving it alone never removes a file a racing writer of
        // the same shard may just have committed.
        let old = self
            .stat(rel)?
            .is_none_or(|s| s.modified.elapsed().unwrap_or_default() > REPUBLISH_AFTER);
        if old {
            self.delete(rel)?;
            self.put_if_absent(rel, bytes)?;
        }
        Ok(())
    }

    fn object_dir(&self) -> Option<&ObjectDir> {
        Some(self)
    }
}

/// How old an adopted object may be before [`ObjectDir::freshen`] puts it again: far below any
/// sane gc grace period (600 s by default).
const REPUBLISH_AFTER: Duration = Duration::from_secs(60);

/// The runtime every object-store request runs on (built once, two threads: requests wait on
/// the network, not the CPU).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bdense-object-store")
            .enable_all()
            .build()
            .expect("tokio runtime for object storage")
    })
}

/// One client per bucket, built from the environment on first use.
#[cfg(feature = "s3")]
fn s3_client(bucket: &str) -> Result<Arc<dyn ObjectStore>> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    use object_store::client::SpawnedReqwestConnector;
    use object_store::{BackoffConfig, ClientConfigKey, RetryConfig};
    use std::collections::HashMap;
    use std::sync::Mutex;
    static CLIENTS: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let mut clients = CLIENTS
        .get_or_init(Default::default)
        .lock()
        .expect("no poisoned client cache");
    if let Some(client) = clients.get(bucket) {
        return Ok(client.clone());
    }
    // A few quick retries: a store on loopback or in the same region answers in
    // milliseconds, and an unreachable endpoint should be reported in seconds, not minutes.
    let retry = RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
    };
    let client = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
            "5s",
        )
        .with_retry(retry)
        .with_http_connector(SpawnedReqwestConnector::new(runtime().handle().clone()))
        .build()
        .map_err(|e| StoreError::ObjectStore {
            path: PathBuf::from(format!("s3://{bucket}")),
            detail: format!("cannot configure S3 from the environment: {}", one_line(&e)),
        })?;
    let client: Arc<dyn ObjectStore> = Arc::new(client);
    clients.insert(bucket.to_string(), client.clone());
    Ok(client)
}

#[cfg(not(feature = "s3"))]
fn s3_client(bucket: &str) -> Result<Arc<dyn ObjectStore>> {
    Err(StoreError::ObjectStore {
        path: PathBuf::from(format!("s3://{bucket}")),
        detail: "this bdense was built without S3 support: build it with `--features bdense-pipeline/s3` (see .ci/s3)".into(),
    })
}

/// What went wrong, in one line a user can act on.
fn explain(bucket: &str, e: &object_store::Error) -> String {
    let text = one_line(e);
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .or_else(|_| std::env::var("AWS_ENDPOINT"))
        .unwrap_or_else(|_| "the AWS default endpoint".into());
    if text.contains("NoSuchBucket") {
        format!("bucket {bucket:?} does not exist at {endpoint}")
    } else if matches!(
        e,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) || [
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
    ]
    .iter()
    .any(|code| text.contains(code))
    {
        format!(
            "access denied by {endpoint}: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY ({})",
            shorten(&text)
        )
    } else if [
        "error sending request",
        "Connection refused",
        "connect",
        "dns error",
    ]
    .iter()
    .any(|s| text.contains(s))
    {
        format!(
            "cannot reach the object store at {endpoint} (set AWS_ENDPOINT_URL, and AWS_ALLOW_HTTP=true for http://): {}",
            shorten(&text)
        )
    } else {
        shorten(&text)
    }
}

/// The error chain on one line.
fn one_line(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most a few hundred characters of a (response-body quoting) error.
fn shorten(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}
