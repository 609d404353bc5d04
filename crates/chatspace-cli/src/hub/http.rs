//! HTTP for the Hub client: one `ureq` agent that follows no redirects by itself, sends the
//! token only to the endpoint's own origin, retries passing failures with exponential backoff,
//! and turns the Hub's error answers into [`HubError`]s.

use std::error::Error as StdError;
use std::path::Path;
use std::time::Duration;

use ureq::http::Response;
use ureq::tls::{PemItem, RootCerts, TlsConfig};
use ureq::{Agent, Body};

use super::config::{HubConfig, RetryPolicy};
use super::error::HubError;
use super::repo::RepoRef;

/// Redirects followed within one origin (renamed repositories answer with one).
const MAX_SAME_ORIGIN_REDIRECTS: u32 = 5;

/// The largest error body read for its message.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// A request failure, before retries are decided.
pub enum Fail {
    /// Worth trying again: a connection error, a timeout, HTTP 5xx or 429, a cut body.
    Transient {
        /// The failure in words.
        reason: String,
        /// The failure.
        source: Option<Box<dyn StdError + Send + Sync>>,
    },
    /// Final.
    Fatal(HubError),
}

impl From<HubError> for Fail {
    fn from(e: HubError) -> Self {
        Fail::Fatal(e)
    }
}

/// The agent plus what decides where the token goes and how often to retry.
#[derive(Clone)]
pub struct Http {
    agent: Agent,
    endpoint_origin: String,
    token: Option<String>,
    retry: RetryPolicy,
}

impl Http {
    /// An agent for `cfg`: no automatic redirects, HTTP errors as responses, the configured
    /// timeouts, proxies from the usual variables.
    pub fn new(cfg: &HubConfig) -> Http {
        let mut builder = Agent::config_builder();
        if let Some(roots) = cfg.ca_bundle.as_deref().and_then(root_certs) {
            builder = builder.tls_config(TlsConfig::builder().root_certs(roots).build());
        }
        let agent = builder
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_connect(Some(cfg.connect_timeout))
            .timeout_recv_response(Some(cfg.read_timeout))
            .timeout_per_read(Some(cfg.read_timeout))
            .user_agent(concat!("chatspace/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Http {
            agent,
            endpoint_origin: origin(&cfg.endpoint).unwrap_or_default().to_string(),
            token: cfg.token().map(str::to_string),
            retry: cfg.retry,
        }
    }

    /// The retry policy.
    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    /// Is the token sent with a request to `url` (a token exists and `url` is on the
    /// endpoint's origin)?
    pub fn sends_token_to(&self, url: &str) -> bool {
        self.token.is_some() && origin(url) == Some(self.endpoint_origin.as_str())
    }

    /// One GET, no retries. `from` asks for `Range: bytes=from-`; file downloads ask for the
    /// identity encoding so that sizes are the file's.
    pub fn get_once(
        &self,
        url: &str,
        from: Option<u64>,
        identity: bool,
    ) -> Result<Response<Body>, Fail> {
        let mut req = self.agent.get(url);
        if self.sends_token_to(url)
            && let Some(token) = &self.token
        {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        if identity {
            req = req.header("Accept-Encoding", "identity");
        }
        if let Some(n) = from.filter(|&n| n > 0) {
            req = req.header("Range", format!("bytes={n}-"));
        }
        match req.call() {
            Ok(resp) if is_transient_status(resp.status().as_u16()) => Err(Fail::Transient {
                reason: status_words(resp.status().as_u16()),
                source: None,
            }),
            Ok(resp) => Ok(resp),
            Err(e) if is_transient_error(&e) => {
                let (reason, source) = describe(e);
                Err(Fail::Transient { reason, source })
            }
            Err(ureq::Error::Http(e)) => Err(Fail::Fatal(HubError::BadResponse {
                url: redact(url).to_string(),
                reason: format!("cannot build the request: {e}"),
            })),
            Err(e) => {
                let (reason, source) = describe(e);
                Err(Fail::Fatal(unreachable(url, 1, reason, source)))
            }
        }
    }

    /// GET with retries, following redirects that stay on the same origin. Returns the URL
    /// answered and the first answer that is neither passing failure nor such a redirect:
    /// a success, an error status, or a redirect to another origin.
    pub fn get(&self, url: &str, identity: bool) -> Result<(String, Response<Body>), HubError> {
        let mut url = url.to_string();
        for _ in 0..=MAX_SAME_ORIGIN_REDIRECTS {
            let resp = self.retrying(&url, |u| self.get_once(u, None, identity))?;
            match redirect_target(&url, &resp) {
                Some(next) if origin(&next) == origin(&url) => url = next,
                _ => return Ok((url, resp)),
            }
        }
        Err(HubError::BadResponse {
            url: redact(&url).to_string(),
            reason: format!("more than {MAX_SAME_ORIGIN_REDIRECTS} redirects"),
        })
    }

    /// Runs `attempt` until it succeeds, fails for good, or the tries run out.
    pub fn retrying<T>(
        &self,
        url: &str,
        mut attempt: impl FnMut(&str) -> Result<T, Fail>,
    ) -> Result<T, HubError> {
        let mut failed = 0;
        loop {
            match attempt(url) {
                Ok(v) => return Ok(v),
                Err(Fail::Fatal(e)) => return Err(e),
                Err(Fail::Transient { reason, source }) => {
                    failed += 1;
                    if failed >= self.retry.tries.max(1) {
                        return Err(unreachable(url, failed, reason, source));
                    }
                    let wait = self.retry.delay(failed);
                    tracing::debug!(
                        "GET {url} failed ({reason}); try {failed}, retrying in {wait:?}"
                    );
                    std::thread::sleep(wait);
                }
            }
        }
    }
}

/// The error after the last of `tries` failed.
pub fn unreachable(
    url: &str,
    tries: u32,
    reason: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
) -> HubError {
    HubError::Unreachable {
        origin: origin(url).unwrap_or(url).to_string(),
        url: redact(url).to_string(),
        tries,
        reason,
        source,
    }
}

/// `url` without its query: file hosts sign their URLs in the query, and signatures are
/// credentials too.
pub fn redact(url: &str) -> &str {
    url.split_once('?').map_or(url, |(base, _)| base)
}

/// The certificates of a PEM bundle, or `None` (with a warning) when there are none to read;
/// the built-in roots are used then.
fn root_certs(bundle: &Path) -> Option<RootCerts> {
    let pem = match std::fs::read(bundle) {
        Ok(pem) => pem,
        Err(e) => {
            tracing::warn!("ignoring CA bundle {}: {e}", bundle.display());
            return None;
        }
    };
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        tracing::warn!(
            "ignoring CA bundle {}: no certificates in it",
            bundle.display()
        );
        return None;
    }
    Some(RootCerts::new_with_certs(&certs))
}

/// Sleeps between tries of a loop that counts its own failures.
pub fn backoff(retry: RetryPolicy, failed: u32) {
    std::thread::sleep(retry.delay(failed).min(Duration::from_secs(60)));
}

/// A transport error in words, and as the source to keep (an I/O error without ureq's `io:`
/// prefix, so that the words and the source read the same).
fn describe(e: ureq::Error) -> (String, Option<Box<dyn StdError + Send + Sync>>) {
    match e {
        ureq::Error::Io(io) => {
            let mut reason = io.to_string();
            if io.kind() == std::io::ErrorKind::InvalidData && reason.contains("certificate") {
                reason.push_str(
                    "; behind a proxy that intercepts TLS, set SSL_CERT_FILE to its CA bundle",
                );
            }
            (reason, Some(Box::new(io)))
        }
        e => (e.to_string(), Some(Box::new(e))),
    }
}

fn is_transient_status(status: u16) -> bool {
    status == 429 || (500..600).contains(&status)
}

fn status_words(status: u16) -> String {
    match ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(words) => format!("HTTP {status} {words}"),
        None => format!("HTTP {status}"),
    }
}

fn is_transient_error(e: &ureq::Error) -> bool {
    // Certificate and other TLS failures come as InvalidData: trying again will not help.
    if let ureq::Error::Io(io) = e {
        return io.kind() != std::io::ErrorKind::InvalidData;
    }
    matches!(
        e,
        ureq::Error::Timeout(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)
            | ureq::Error::BodyStalled
    )
}

/// `scheme://authority` of an absolute URL (lowercased scheme and host are compared as given).
pub fn origin(url: &str) -> Option<&str> {
    let scheme_end = url.find("://")?;
    let rest = &url[scheme_end + 3..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&url[..scheme_end + 3 + end])
}

/// Where a 3xx answer points, as an absolute URL.
pub fn redirect_target(from: &str, resp: &Response<Body>) -> Option<String> {
    if !resp.status().is_redirection() {
        return None;
    }
    let location = header(resp, "location")?;
    Some(join_url(from, location))
}

/// `location` made absolute against `base`.
pub fn join_url(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let origin = origin(base).unwrap_or(base);
    if let Some(rest) = location.strip_prefix("//") {
        let scheme = &base[..base.find("://").map(|i| i + 1).unwrap_or(0)];
        return format!("{scheme}//{rest}");
    }
    if location.starts_with('/') {
        return format!("{origin}{location}");
    }
    let path_end = base.find(['?', '#']).unwrap_or(base.len());
    let dir_end = base[..path_end]
        .rfind('/')
        .map(|i| i + 1)
        .unwrap_or(path_end);
    if dir_end <= origin.len() {
        format!("{origin}/{location}")
    } else {
        format!("{}{location}", &base[..dir_end])
    }
}

/// The target of the `rel="next"` part of a `Link` header.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| target.to_string())
    })
}

/// A header's value as text.
pub fn header<'a>(resp: &'a Response<Body>, name: &str) -> Option<&'a str> {
    resp.headers().get(name)?.to_str().ok().map(str::trim)
}

/// A header's value as a number.
pub fn header_u64(resp: &Response<Body>, name: &str) -> Option<u64> {
    header(resp, name)?.parse().ok()
}

/// An ETag without its weak prefix and quotes, as `huggingface_hub` names blobs.
pub fn normalize_etag(raw: &str) -> String {
    let raw = raw.trim();
    let raw = raw.strip_prefix("W/").unwrap_or(raw);
    raw.trim_matches('"').to_string()
}

/// The first byte and total size of a `Content-Range: bytes A-B/T` answer.
pub fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start.trim().parse().ok()?, total))
}

/// Reads the `X-Error-Code` header and the message of an error answer.
fn error_details(resp: &mut Response<Body>) -> (Option<String>, String) {
    let code = header(resp, "x-error-code").map(str::to_string);
    let mut message = header(resp, "x-error-message")
        .unwrap_or_default()
        .to_string();
    if message.is_empty() {
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_ERROR_BODY)
            .lossy_utf8(true)
            .read_to_string()
            .unwrap_or_default();
        message = match serde_json::from_str::<serde_json::Value>(&body) {
            Ok(v) => v
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or_default()
                .to_string(),
            Err(_) => body,
        };
    }
    let mut message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if message.len() > 200 {
        let cut = (0..=200)
            .rev()
            .find(|&i| message.is_char_boundary(i))
            .unwrap_or(0);
        message.truncate(cut);
        message.push_str("...");
    }
    (code, message)
}

/// What an error answer about `repo` (to `url`) means. `file` is the file asked for, for
/// download answers.
pub fn repo_error(
    http: &Http,
    endpoint: &str,
    repo: &RepoRef,
    url: &str,
    mut resp: Response<Body>,
    file: Option<(&str, &str)>,
) -> HubError {
    let status = resp.status().as_u16();
    let (code, message) = error_details(&mut resp);
    let token_sent = http.sends_token_to(url);
    let not_found = || HubError::RepoNotFound {
        kind: repo.kind,
        id: repo.id.clone(),
        endpoint: endpoint.to_string(),
        token_sent,
        status,
    };
    let denied = |gated| HubError::AccessDenied {
        kind: repo.kind,
        id: repo.id.clone(),
        status,
        token_sent,
        gated,
        endpoint_page: format!("{endpoint}/{}{}", repo.kind.url_prefix(), repo.id),
    };
    let file_missing = |(revision, path): (&str, &str)| HubError::FileNotFound {
        kind: repo.kind,
        id: repo.id.clone(),
        revision: revision.to_string(),
        path: path.to_string(),
    };
    match (status, code.as_deref()) {
        (_, Some("RevisionNotFound")) => HubError::RevisionNotFound {
            kind: repo.kind,
            id: repo.id.clone(),
            revision: repo.revision.clone(),
        },
        (_, Some("GatedRepo")) => denied(true),
        (_, Some("RepoNotFound")) => not_found(),
        (_, Some("EntryNotFound")) | (404, _) => match file {
            Some(f) => file_missing(f),
            None => not_found(),
        },
        (401 | 403, _) => denied(false),
        _ => HubError::Status {
            url: redact(url).to_string(),
            status,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(
            origin("https://huggingface.co/api/x"),
            Some("https://huggingface.co")
        );
        assert_eq!(
            origin("http://127.0.0.1:8080"),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(origin("http://h:1?q"), Some("http://h:1"));
        assert_eq!(origin("no-scheme"), None);
    }

    #[test]
    fn redirects_join() {
        let base = "https://hf.co/datasets/o/n/resolve/main/a/b.parquet";
        assert_eq!(join_url(base, "https://cdn/x?sig=1"), "https://cdn/x?sig=1");
        assert_eq!(join_url(base, "//cdn/x"), "https://cdn/x");
        assert_eq!(join_url(base, "/api/x"), "https://hf.co/api/x");
        assert_eq!(
            join_url(base, "c.parquet"),
            "https://hf.co/datasets/o/n/resolve/main/a/c.parquet"
        );
        assert_eq!(join_url("https://hf.co", "x"), "https://hf.co/x");
    }

    #[test]
    fn next_links() {
        let link = r#"<https://hf.co/api/datasets/o/n/tree/main?cursor=abc>; rel="next", <https://hf.co/x>; rel="prev""#;
        assert_eq!(
            next_link(link).as_deref(),
            Some("https://hf.co/api/datasets/o/n/tree/main?cursor=abc")
        );
        assert_eq!(next_link(r#"<https://hf.co/x>; rel="prev""#), None);
    }

    #[test]
    fn etags_and_ranges() {
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("abc"), "abc");
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn the_token_goes_to_the_endpoint_only() {
        let cfg = HubConfig::new("https://hf.co/", std::path::Path::new("/h"))
            .with_token(Some("hf_x".into()));
        let http = Http::new(&cfg);
        assert!(http.sends_token_to("https://hf.co/api/models/x"));
        assert!(!http.sends_token_to("https://cdn-lfs.hf.co/x"));
        assert!(!http.sends_token_to("http://hf.co/x"));
        assert!(!http.sends_token_to("https://hf.co.evil.com/x"));
        let http = Http::new(&HubConfig::new("https://hf.co", std::path::Path::new("/h")));
        assert!(!http.sends_token_to("https://hf.co/api/models/x"));
    }

    #[test]
    fn transient_statuses() {
        assert!(is_transient_status(503) && is_transient_status(429) && is_transient_status(500));
        assert!(!is_transient_status(404) && !is_transient_status(403));
        assert_eq!(status_words(503), "HTTP 503 Service Unavailable");
    }
}
