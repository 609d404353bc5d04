//! What can go wrong talking to the Hub or its cache. Every message is one line, names the
//! repository, revision, file or URL concerned, and never contains the token.

use std::path::PathBuf;

use super::repo::RepoKind;

/// An error of the Hub client.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The repository does not exist, or is private and the request had no (valid) token.
    #[error("{kind} {id} not found on {endpoint}{}", not_found_hint(*.token_sent, *.status))]
    RepoNotFound {
        /// Model or dataset.
        kind: RepoKind,
        /// The repository id.
        id: String,
        /// The Hub asked.
        endpoint: String,
        /// Whether an `Authorization` header was sent.
        token_sent: bool,
        /// 401 or 404.
        status: u16,
    },

    /// The Hub refused access: the repository is gated or private.
    #[error(
        "access to {kind} {id} was refused ({status}): it is gated or private; set HF_TOKEN to a token that has access{}",
        access_hint(*.token_sent, *.gated, endpoint_page)
    )]
    AccessDenied {
        /// Model or dataset.
        kind: RepoKind,
        /// The repository id.
        id: String,
        /// 401 or 403.
        status: u16,
        /// Whether an `Authorization` header was sent.
        token_sent: bool,
        /// Whether the Hub said `GatedRepo`.
        gated: bool,
        /// The repository's page, where gated access is requested.
        endpoint_page: String,
    },

    /// The repository exists but has no such branch, tag or commit.
    #[error("revision {revision} not found in {kind} {id}")]
    RevisionNotFound {
        /// Model or dataset.
        kind: RepoKind,
        /// The repository id.
        id: String,
        /// The revision asked for.
        revision: String,
    },

    /// The repository has no such file at that revision.
    #[error("file {path} not found in {kind} {id} at revision {revision}")]
    FileNotFound {
        /// Model or dataset.
        kind: RepoKind,
        /// The repository id.
        id: String,
        /// The revision (a commit).
        revision: String,
        /// The file's path in the repository.
        path: String,
    },

    /// `HF_HUB_OFFLINE` is set and the revision is not in the cache.
    #[error(
        "HF_HUB_OFFLINE is set and {kind} {id} (revision {revision}) is not in the cache at {}",
        cache.display()
    )]
    OfflineRepo {
        /// Model or dataset.
        kind: RepoKind,
        /// The repository id.
        id: String,
        /// The revision asked for.
        revision: String,
        /// The repository's cache folder.
        cache: PathBuf,
    },

    /// `HF_HUB_OFFLINE` is set and a file is not in the cache.
    #[error(
        "HF_HUB_OFFLINE is set and file {path} of {kind} {id} (revision {revision}) is not in the cache at {}",
        cache.display()
    )]
    OfflineFile {
        /// Model or dataset.
        kind: RepoKind,
        /// The repository id.
        id: String,
        /// The revision asked for.
        revision: String,
        /// The file's path in the repository.
        path: String,
        /// The snapshot folder looked in.
        cache: PathBuf,
    },

    /// The Hub (or its file host) could not be reached, or kept failing, after every retry.
    #[error(
        "cannot reach {origin} ({reason}) after {tries} {} (GET {url})",
        if *.tries == 1 { "try" } else { "tries" }
    )]
    Unreachable {
        /// `scheme://host[:port]` of the URL.
        origin: String,
        /// The URL of the last try (tokens are never part of URLs).
        url: String,
        /// Tries made.
        tries: u32,
        /// The last failure, in words.
        reason: String,
        /// The last failure.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// An HTTP error that is not one of the above.
    #[error("GET {url} answered HTTP {status}{}", detail(message))]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// The Hub's error message, if any.
        message: String,
    },

    /// The answer was not what the Hub sends (bad JSON, missing headers, bad sizes).
    #[error("unexpected answer from {url}: {reason}")]
    BadResponse {
        /// The URL.
        url: String,
        /// What was wrong.
        reason: String,
    },

    /// A downloaded file does not match its size or sha256; it was removed.
    #[error("download of {url} is corrupt ({reason}); the partial file was removed")]
    Corrupt {
        /// The URL.
        url: String,
        /// What did not match.
        reason: String,
    },

    /// A file path (from the listing or the caller) that cannot be a repository path.
    #[error("invalid path {path:?} in {kind} {id}: {reason}")]
    InvalidPath {
        /// Model or dataset.
        kind: RepoKind,
        /// The repository id.
        id: String,
        /// The path.
        path: String,
        /// Why.
        reason: &'static str,
    },

    /// Reading or writing the cache failed.
    #[error("cannot {action} {} in the Hugging Face cache", path.display())]
    Cache {
        /// What was being done: `write`, `create`, `lock`, ...
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// There is no home folder to put the default cache in.
    #[error("cannot locate the Hugging Face cache: HOME is not set; set HF_HOME or HF_HUB_CACHE")]
    NoHome,
}

fn not_found_hint(token_sent: bool, status: u16) -> &'static str {
    match (token_sent, status) {
        (false, _) => "; if it is private, set HF_TOKEN",
        (true, 401) => "; the token sent was not accepted",
        (true, _) => "",
    }
}

fn access_hint(token_sent: bool, gated: bool, page: &str) -> String {
    let sent = if token_sent {
        "a token was sent"
    } else {
        "no token was sent"
    };
    if gated {
        format!(" ({sent}; request access at {page})")
    } else {
        format!(" ({sent})")
    }
}

fn detail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl HubError {
    /// Is the user's input at fault (a repository, revision or file that does not exist or
    /// cannot be accessed, or missing from the cache while offline)? Such errors map to exit
    /// code 3; the rest (network, cache I/O, corrupt downloads) to 1.
    pub fn is_bad_input(&self) -> bool {
        match self {
            HubError::RepoNotFound { .. }
            | HubError::AccessDenied { .. }
            | HubError::RevisionNotFound { .. }
            | HubError::FileNotFound { .. }
            | HubError::OfflineRepo { .. }
            | HubError::OfflineFile { .. }
            | HubError::InvalidPath { .. } => true,
            HubError::Status { status, .. } => {
                (400..500).contains(status) && !matches!(status, 408 | 429)
            }
            HubError::Unreachable { .. }
            | HubError::BadResponse { .. }
            | HubError::Corrupt { .. }
            | HubError::Cache { .. }
            | HubError::NoHome => false,
        }
    }

    /// This error for `main`'s error handling: bad input becomes a
    /// [`crate::error::BadInput`] (exit 3) carrying the same line, the rest stays as it is.
    pub fn into_anyhow(self) -> anyhow::Error {
        if self.is_bad_input() {
            anyhow::Error::new(crate::error::BadInput(self.to_string()))
        } else {
            anyhow::Error::new(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_say_what_to_do() {
        let e = HubError::RepoNotFound {
            kind: RepoKind::Dataset,
            id: "org/name".into(),
            endpoint: "https://huggingface.co".into(),
            token_sent: false,
            status: 401,
        };
        assert_eq!(
            e.to_string(),
            "dataset org/name not found on https://huggingface.co; if it is private, set HF_TOKEN"
        );
        let e = HubError::AccessDenied {
            kind: RepoKind::Model,
            id: "org/name".into(),
            status: 403,
            token_sent: true,
            gated: true,
            endpoint_page: "https://huggingface.co/org/name".into(),
        };
        assert_eq!(
            e.to_string(),
            "access to model org/name was refused (403): it is gated or private; set HF_TOKEN to a token that has access (a token was sent; request access at https://huggingface.co/org/name)"
        );
        let e = HubError::OfflineRepo {
            kind: RepoKind::Dataset,
            id: "org/name".into(),
            revision: "main".into(),
            cache: "/c/datasets--org--name".into(),
        };
        assert_eq!(
            e.to_string(),
            "HF_HUB_OFFLINE is set and dataset org/name (revision main) is not in the cache at /c/datasets--org--name"
        );
        assert!(e.is_bad_input());
        let e = HubError::Unreachable {
            origin: "https://huggingface.co".into(),
            url: "https://huggingface.co/api/x".into(),
            tries: 5,
            reason: "connection refused".into(),
            source: None,
        };
        assert_eq!(
            e.to_string(),
            "cannot reach https://huggingface.co (connection refused) after 5 tries (GET https://huggingface.co/api/x)"
        );
        assert!(!e.is_bad_input());
        let err = e.into_anyhow();
        assert_eq!(crate::error::exit_code(&err), 1);
    }

    #[test]
    fn bad_input_maps_to_exit_3() {
        let e = HubError::RevisionNotFound {
            kind: RepoKind::Dataset,
            id: "o/n".into(),
            revision: "v9".into(),
        };
        let err = e.into_anyhow();
        assert_eq!(err.to_string(), "revision v9 not found in dataset o/n");
        assert_eq!(crate::error::exit_code(&err), 3);
    }
}
