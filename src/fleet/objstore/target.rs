//! An `s3://bucket/prefix` URL and the client for it: endpoint, region and credentials from the
//! environment (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, …),
//! fleet.toml's `[s3]` over them. Short retries: a service that is down fails the publish in
//! seconds, not after object_store's default three minutes.

use crate::config::s3::S3Config;
use object_store::aws::AmazonS3Builder;
use object_store::aws::AmazonS3ConfigKey::{self, Client};
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};
use std::sync::Arc;
use std::time::Duration;

/// Where a publication is uploaded: a bucket, a key prefix in it, and the client.
#[derive(Clone)]
pub struct S3Target {
    /// The URL as given (`s3://bucket/prefix`), for messages.
    pub url: String,
    pub bucket: String,
    /// The key prefix, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// The service's base URL, for messages (`AWS_ENDPOINT`, `[s3] endpoint`, or AWS's).
    pub endpoint: String,
    pub(super) store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Target")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// A `--to` URL or client setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum S3TargetError {
    #[error("{url:?}: {why} (expected s3://bucket or s3://bucket/prefix)")]
    Url { url: String, why: &'static str },
    #[error("{url}: cannot set up the S3 client for endpoint {endpoint}: {source}")]
    Client {
        url: String,
        endpoint: String,
        #[source]
        source: object_store::Error,
    },
}

impl S3Target {
    /// Parses `s3://bucket[/prefix]` and builds its client (no request is made).
    pub fn new(url: &str, settings: &S3Config) -> Result<Self, S3TargetError> {
        let bad = |why| S3TargetError::Url {
            url: url.to_string(),
            why,
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket"));
        }
        if rest.contains(['?', '#']) || prefix.split('/').any(|p| p == "." || p == "..") {
            return Err(bad("a query, fragment, `.` or `..` is not allowed"));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if prefix.contains("//") {
            return Err(bad("empty path component"));
        }
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(e) = &settings.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(r) = &settings.region {
            b = b.with_region(r);
        }
        let endpoint = b
            .get_config_value(&AmazonS3ConfigKey::Endpoint)
            .unwrap_or_else(|| "https://s3.amazonaws.com".to_string());
        if endpoint.starts_with("http://") {
            // Named explicitly by the admin: only request signatures travel, never the secret.
            b = b.with_allow_http(true);
        }
        let store = b
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 2,
                retry_timeout: Duration::from_secs(15),
            })
            // Set key by key: `with_client_options` would drop what the environment set.
            .with_config(Client(ClientConfigKey::ConnectTimeout), "5s")
            .with_config(Client(ClientConfigKey::Timeout), "120s")
            .build()
            .map_err(|source| S3TargetError::Client {
                url: url.to_string(),
                endpoint: endpoint.clone(),
                source,
            })?;
        Ok(Self {
            url: url.to_string(),
            bucket: bucket.to_string(),
            prefix,
            endpoint,
            store: Arc::new(store),
        })
    }

    /// The key of `rel` under a host's path: `<prefix>/<host_path>/<rel>`.
    pub fn key(&self, host_path: &str, rel: &str) -> String {
        let mut parts: Vec<&str> = Vec::with_capacity(3);
        if !self.prefix.is_empty() {
            parts.push(&self.prefix);
        }
        parts.push(host_path);
        if !rel.is_empty() {
            parts.push(rel);
        }
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_bucket_and_prefix_and_keys() {
        let t = S3Target::new("s3://fleet/pub/", &S3Config::default()).unwrap();
        assert_eq!((t.bucket.as_str(), t.prefix.as_str()), ("fleet", "pub"));
        assert_eq!(t.key("laptop", "current.txt"), "pub/laptop/current.txt");
        let t = S3Target::new("s3://fleet", &S3Config::default()).unwrap();
        assert_eq!(
            t.key("laptop", "gens/3/manifest.json"),
            "laptop/gens/3/manifest.json"
        );
        for bad in [
            "s3://",
            "https://x/y",
            "s3:///p",
            "s3://b/../x",
            "s3://b/a//c",
        ] {
            assert!(S3Target::new(bad, &S3Config::default()).is_err(), "{bad}");
        }
    }
}
