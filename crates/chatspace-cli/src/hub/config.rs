//! Where the Hub is and where its cache lives, read from the environment the way
//! `huggingface_hub` reads it, so that Python and chatspace share one cache and one token.
//!
//! | variable | meaning |
//! |---|---|
//! | `HF_ENDPOINT` | the Hub's base URL (default `https://huggingface.co`) |
//! | `HF_HOME` | default `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface` |
//! | `HF_HUB_CACHE` (legacy `HUGGINGFACE_HUB_CACHE`) | the cache root, default `$HF_HOME/hub` |
//! | `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) | `1`, `true`, `yes`, `on`: no network at all |
//! | `HF_TOKEN` (legacy `HUGGING_FACE_HUB_TOKEN`) | the token; else the file `HF_TOKEN_PATH`, default `$HF_HOME/token` |
//! | `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE` | the first set: a PEM bundle of root certificates trusted instead of the built-in Mozilla roots (for TLS-intercepting proxies) |

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::HubError;

/// The Hub used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// How often, and how patiently, a request that failed for a passing reason (a connection
/// error, a timeout, HTTP 5xx or 429) is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (at least 1).
    pub tries: u32,
    /// The wait after the first failed try; it doubles after each further one.
    pub first_delay: Duration,
}

impl Default for RetryPolicy {
    /// Five tries, waiting 0.5, 1, 2 and 4 s in between.
    fn default() -> Self {
        RetryPolicy {
            tries: 5,
            first_delay: Duration::from_millis(500),
        }
    }
}

impl RetryPolicy {
    /// The wait after `failed` tries have failed (1 for the first failure).
    pub fn delay(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(16);
        self.first_delay.saturating_mul(1 << doublings)
    }
}

/// Everything the Hub client needs to know, usually from [`HubConfig::from_env`].
#[derive(Clone)]
pub struct HubConfig {
    /// The Hub's base URL, without a trailing `/`.
    pub endpoint: String,
    /// The `huggingface_hub` cache root (`models--org--name` folders live here).
    pub cache_dir: PathBuf,
    /// Where repository listings are recorded for offline use
    /// (`$HF_HOME/chatspace/listings`).
    pub listings_dir: PathBuf,
    /// No network at all: everything comes from the cache.
    pub offline: bool,
    /// Sent as `Authorization: Bearer` to the endpoint only; never shown.
    token: Option<String>,
    /// Retries of failed requests.
    pub retry: RetryPolicy,
    /// The longest wait for a connection.
    pub connect_timeout: Duration,
    /// The longest wait for any one read from the network.
    pub read_timeout: Duration,
    /// A PEM file of root certificates to trust instead of the built-in (Mozilla) ones.
    pub ca_bundle: Option<PathBuf>,
}

impl fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("listings_dir", &self.listings_dir)
            .field("offline", &self.offline)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("retry", &self.retry)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("ca_bundle", &self.ca_bundle)
            .finish()
    }
}

impl HubConfig {
    /// A configuration for `endpoint` with everything under `hf_home` (the cache in
    /// `hf_home/hub`), online, without a token, with the default retries and timeouts.
    pub fn new(endpoint: impl Into<String>, hf_home: &Path) -> HubConfig {
        HubConfig {
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            cache_dir: hf_home.join("hub"),
            listings_dir: listings_dir(hf_home),
            offline: false,
            token: None,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            ca_bundle: None,
        }
    }

    /// The same configuration with this token (blank counts as none).
    #[cfg(test)]
    pub fn with_token(mut self, token: Option<String>) -> HubConfig {
        self.token = token.and_then(|t| clean_token(&t));
        self
    }

    /// Reads the `HF_*` variables (see the module docs) and the token file.
    pub fn from_env() -> Result<HubConfig, HubError> {
        HubConfig::from_vars(|name| std::env::var(name).ok())
    }

    /// [`HubConfig::from_env`] over any source of variables (tests pass a map).
    pub(crate) fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<HubConfig, HubError> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let home = var("HOME").map(PathBuf::from);
        let expand = |value: String| -> Result<PathBuf, HubError> {
            match value.strip_prefix('~') {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                    let home = home.clone().ok_or(HubError::NoHome)?;
                    Ok(home.join(rest.trim_start_matches('/')))
                }
                _ => Ok(PathBuf::from(value)),
            }
        };
        let hf_home = match var("HF_HOME") {
            Some(v) => expand(v)?,
            None => match var("XDG_CACHE_HOME") {
                Some(v) => expand(v)?.join("huggingface"),
                None => home
                    .clone()
                    .ok_or(HubError::NoHome)?
                    .join(".cache/huggingface"),
            },
        };
        let cache_dir = match var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
            Some(v) => expand(v)?,
            None => hf_home.join("hub"),
        };
        let endpoint = var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let offline = var("HF_HUB_OFFLINE")
            .or_else(|| var("TRANSFORMERS_OFFLINE"))
            .is_some_and(|v| is_true(&v));
        let token = match var("HF_TOKEN").or_else(|| var("HUGGING_FACE_HUB_TOKEN")) {
            Some(t) => clean_token(&t),
            None => {
                let path = match var("HF_TOKEN_PATH") {
                    Some(p) => expand(p)?,
                    None => hf_home.join("token"),
                };
                read_token_file(&path)
            }
        };
        let ca_bundle = ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"]
            .into_iter()
            .find_map(var)
            .map(expand)
            .transpose()?;
        let mut cfg = HubConfig::new(endpoint, &hf_home);
        cfg.cache_dir = cache_dir;
        cfg.offline = offline;
        cfg.token = token;
        cfg.ca_bundle = ca_bundle;
        Ok(cfg)
    }

    /// Is there a token to send?
    #[cfg(test)]
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The token, for the `Authorization` header only.
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

/// `$HF_HOME/chatspace/listings`.
fn listings_dir(hf_home: &Path) -> PathBuf {
    hf_home.join("chatspace").join("listings")
}

/// `huggingface_hub`'s reading of a yes/no variable.
fn is_true(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

fn clean_token(token: &str) -> Option<String> {
    let t = token.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// The token stored by `hf auth login`, if the file exists and is readable.
fn read_token_file(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => clean_token(&text),
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::debug!("ignoring token file {}: {e}", path.display());
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> HubConfig {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubConfig::from_vars(|k| map.get(k).cloned()).unwrap()
    }

    #[test]
    fn defaults_follow_huggingface_hub() {
        let c = cfg(&[("HOME", "/home/u")]);
        assert_eq!(c.endpoint, "https://huggingface.co");
        assert_eq!(c.cache_dir, Path::new("/home/u/.cache/huggingface/hub"));
        assert_eq!(
            c.listings_dir,
            Path::new("/home/u/.cache/huggingface/chatspace/listings")
        );
        assert!(!c.offline);
        assert_eq!(c.ca_bundle, None);
        let c = cfg(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/xdg")]);
        assert_eq!(c.cache_dir, Path::new("/xdg/huggingface/hub"));
    }

    #[test]
    fn hub_cache_beats_hf_home() {
        let c = cfg(&[("HF_HOME", "/h"), ("HF_HUB_CACHE", "~/c"), ("HOME", "/u")]);
        assert_eq!(c.cache_dir, Path::new("/u/c"));
        assert_eq!(c.listings_dir, Path::new("/h/chatspace/listings"));
        let c = cfg(&[("HF_HOME", "/h/"), ("HF_ENDPOINT", "http://x:1/")]);
        assert_eq!(c.cache_dir, Path::new("/h/hub"));
        assert_eq!(c.endpoint, "http://x:1");
        let c = cfg(&[("HF_HOME", "/h"), ("HUGGINGFACE_HUB_CACHE", "/old")]);
        assert_eq!(c.cache_dir, Path::new("/old"));
    }

    #[test]
    fn no_home_is_an_error_only_when_needed() {
        let map: HashMap<String, String> = HashMap::new();
        let err = HubConfig::from_vars(|k| map.get(k).cloned()).unwrap_err();
        assert!(matches!(err, HubError::NoHome), "{err}");
        assert!(cfg(&[("HF_HOME", "/h")]).cache_dir.ends_with("hub"));
    }

    #[test]
    fn ca_bundles_in_order() {
        let c = cfg(&[
            ("HF_HOME", "/h"),
            ("CURL_CA_BUNDLE", "/curl.pem"),
            ("REQUESTS_CA_BUNDLE", "/requests.pem"),
        ]);
        assert_eq!(c.ca_bundle.as_deref(), Some(Path::new("/requests.pem")));
        let c = cfg(&[
            ("HF_HOME", "/h"),
            ("SSL_CERT_FILE", "/ssl.pem"),
            ("REQUESTS_CA_BUNDLE", "/requests.pem"),
        ]);
        assert_eq!(c.ca_bundle.as_deref(), Some(Path::new("/ssl.pem")));
    }

    #[test]
    fn offline_values() {
        for v in ["1", "true", "YES", "on", " On "] {
            assert!(
                cfg(&[("HF_HOME", "/h"), ("HF_HUB_OFFLINE", v)]).offline,
                "{v}"
            );
        }
        for v in ["0", "false", "no", ""] {
            assert!(
                !cfg(&[("HF_HOME", "/h"), ("HF_HUB_OFFLINE", v)]).offline,
                "{v}"
            );
        }
        assert!(cfg(&[("HF_HOME", "/h"), ("TRANSFORMERS_OFFLINE", "1")]).offline);
    }

    #[test]
    fn token_precedence_env_then_file() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path().to_str().unwrap();
        // No variable, no file: no token.
        assert!(!cfg(&[("HF_HOME", h)]).has_token());
        std::fs::write(home.path().join("token"), "  hf_file\n").unwrap();
        let c = cfg(&[("HF_HOME", h)]);
        assert_eq!(c.token(), Some("hf_file"));
        // HF_TOKEN beats the file, the legacy name comes second.
        let c = cfg(&[("HF_HOME", h), ("HF_TOKEN", "hf_env\n")]);
        assert_eq!(c.token(), Some("hf_env"));
        let c = cfg(&[
            ("HF_HOME", h),
            ("HUGGING_FACE_HUB_TOKEN", "hf_legacy"),
            ("HF_TOKEN", "hf_env"),
        ]);
        assert_eq!(c.token(), Some("hf_env"));
        let c = cfg(&[("HF_HOME", h), ("HUGGING_FACE_HUB_TOKEN", "hf_legacy")]);
        assert_eq!(c.token(), Some("hf_legacy"));
        // A blank HF_TOKEN counts as unset.
        let c = cfg(&[("HF_HOME", h), ("HF_TOKEN", "  ")]);
        assert_eq!(c.token(), Some("hf_file"));
        // HF_TOKEN_PATH moves the file.
        std::fs::write(home.path().join("other"), "hf_other").unwrap();
        let other = home.path().join("other");
        let c = cfg(&[("HF_HOME", h), ("HF_TOKEN_PATH", other.to_str().unwrap())]);
        assert_eq!(c.token(), Some("hf_other"));
        // A blank file is no token.
        std::fs::write(home.path().join("token"), "\n").unwrap();
        assert!(!cfg(&[("HF_HOME", h)]).has_token());
    }

    #[test]
    fn debug_never_shows_the_token() {
        let c = HubConfig::new("http://h", Path::new("/h")).with_token(Some("hf_secret".into()));
        let text = format!("{c:?}");
        assert!(!text.contains("hf_secret"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn delays_double() {
        let r = RetryPolicy::default();
        let waits: Vec<u128> = (1..r.tries).map(|i| r.delay(i).as_millis()).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000]);
    }
}
