//! fleet.toml's `[s3]` (docs/configuration.md): where `fleet publish --to s3://…` finds the
//! S3-compatible service. Credentials never go here: they come from the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, …), as every S3 tool reads them.

use serde::Deserialize;

/// The `[s3]` table. Empty: everything from the environment (`AWS_ENDPOINT`, `AWS_REGION`, …).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The service's base URL (`https://s3.example.net`); unset: `AWS_ENDPOINT`, else AWS.
    /// An `http://` endpoint is allowed (the publication is signed; the credentials are not sent,
    /// only request signatures).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The bucket's region; unset: `AWS_REGION`, else `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
}

/// The endpoint must be an http(s) URL. `at` turns a needle into "file:line:col".
pub(super) fn check(s3: &S3Config, at: &dyn Fn(&str) -> String) -> Result<(), String> {
    if let Some(e) = &s3.endpoint {
        let ok = url::Url::parse(e)
            .map(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .unwrap_or(false);
        if !ok {
            return Err(format!(
                "{}: [s3] endpoint {e:?} is not an http:// or https:// URL",
                at(e)
            ));
        }
    }
    Ok(())
}
