//! [`Hub`], the client, and [`Snapshot`], a repository revision resolved to a commit with its
//! file list.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::cache;
use super::config::HubConfig;
use super::error::HubError;
use super::http::{self, Http};
use super::repo::{RepoRef, is_commit, quote};

/// The largest repository listing read from the API.
const MAX_LISTING_BYTES: u64 = 256 * 1024 * 1024;

/// The Hub client. Cheap to clone; clones share one connection pool and can be used from
/// several threads.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: HubConfig,
    http: Http,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub").field("cfg", &self.inner.cfg).finish()
    }
}

/// A repository revision resolved to a commit, with every file path in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The repository and the revision asked for.
    pub repo: RepoRef,
    /// The commit the revision resolved to.
    pub commit: String,
    /// Every file path in the repository at that commit, sorted (offline without a recorded
    /// listing: only the files in the cache).
    pub files: Vec<String>,
    /// The repository's cache folder.
    repo_dir: PathBuf,
}

impl Snapshot {
    /// The snapshot folder in the cache: `{cache}/{repo folder}/snapshots/{commit}`.
    pub fn dir(&self) -> PathBuf {
        cache::snapshot_dir(&self.repo_dir, &self.commit)
    }

    /// Where `path` is (or will be, once downloaded) inside [`Snapshot::dir`].
    pub fn local_path(&self, path: &str) -> PathBuf {
        cache::snapshot_file(&self.repo_dir, &self.commit, path)
    }

    /// The repository's cache folder.
    pub(crate) fn repo_dir(&self) -> &PathBuf {
        &self.repo_dir
    }
}

/// The part of the API's repository answer used here.
#[derive(Deserialize)]
struct RepoInfo {
    sha: Option<String>,
    siblings: Option<Vec<Sibling>>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
}

/// One entry of the tree API's answer.
#[derive(Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
}

impl Hub {
    /// A client for `cfg`.
    pub fn new(cfg: HubConfig) -> Hub {
        let http = Http::new(&cfg);
        Hub {
            inner: Arc::new(Inner { cfg, http }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.inner.cfg
    }

    pub(crate) fn http(&self) -> &Http {
        &self.inner.http
    }

    pub(crate) fn repo_dir(&self, repo: &RepoRef) -> PathBuf {
        cache::repo_dir(&self.inner.cfg.cache_dir, repo)
    }

    /// The commit and every file path of `repo` at its revision.
    ///
    /// Online, this asks the API, then records `refs/{revision}` in the cache and the listing
    /// under `$HF_HOME/chatspace/listings/{repo folder}/{commit}.json`; a revision that is a
    /// commit already listed needs no request. When the Hub cannot be reached after every
    /// retry, a revision found in the cache is used instead (with a warning). Offline, the
    /// revision resolves through `refs/` and the files come from the recorded listing, else
    /// from the snapshot folder.
    pub fn snapshot(&self, repo: &RepoRef) -> Result<Snapshot, HubError> {
        let cfg = &self.inner.cfg;
        if cfg.offline {
            return self.cached_snapshot(repo);
        }
        if is_commit(&repo.revision)
            && let Some(files) = cache::read_listing(&cfg.listings_dir, repo, &repo.revision)
        {
            return Ok(self.make_snapshot(repo, repo.revision.clone(), files));
        }
        match self.api_snapshot(repo) {
            Err(e @ HubError::Unreachable { .. }) => match self.cached_snapshot(repo) {
                Ok(snap) => {
                    tracing::warn!("{e}; using the cached commit {} of {repo}", snap.commit);
                    Ok(snap)
                }
                Err(_) => Err(e),
            },
            other => other,
        }
    }

    fn make_snapshot(&self, repo: &RepoRef, commit: String, files: Vec<String>) -> Snapshot {
        Snapshot {
            repo: repo.clone(),
            commit,
            files,
            repo_dir: self.repo_dir(repo),
        }
    }

    /// The revision as the cache knows it.
    fn cached_snapshot(&self, repo: &RepoRef) -> Result<Snapshot, HubError> {
        let dir = self.repo_dir(repo);
        let missing = || HubError::OfflineRepo {
            kind: repo.kind,
            id: repo.id.clone(),
            revision: repo.revision.clone(),
            cache: dir.clone(),
        };
        let commit = cache::read_ref(&dir, &repo.revision)
            .map_err(|source| HubError::Cache {
                action: "read",
                path: dir.join("refs"),
                source,
            })?
            .ok_or_else(missing)?;
        let files = cache::read_listing(&self.inner.cfg.listings_dir, repo, &commit)
            .or_else(|| cache::files_in_snapshot(&dir, &commit))
            .ok_or_else(missing)?;
        Ok(self.make_snapshot(repo, commit, files))
    }

    /// The revision as the API knows it, recorded in the cache.
    fn api_snapshot(&self, repo: &RepoRef) -> Result<Snapshot, HubError> {
        let cfg = &self.inner.cfg;
        let url = format!(
            "{}/api/{}/{}/revision/{}",
            cfg.endpoint,
            repo.kind.plural(),
            repo.id,
            quote(&repo.revision, "")
        );
        let (url, info, _) = self.get_json::<RepoInfo>(repo, &url)?;
        let commit = match info.sha {
            Some(sha) if is_commit(&sha) => sha,
            other => {
                return Err(HubError::BadResponse {
                    url,
                    reason: format!("no commit sha in the answer (sha: {other:?})"),
                });
            }
        };
        let listed = match info.siblings {
            Some(siblings) => siblings.into_iter().map(|s| s.rfilename).collect(),
            None => self.tree_files(repo, &commit)?,
        };
        let mut files: Vec<String> = Vec::with_capacity(listed.len());
        for f in listed {
            match cache::path_problem(&f) {
                None => files.push(f),
                Some(why) => tracing::warn!("skipping file {f:?} of {repo}: {why}"),
            }
        }
        files.sort();
        files.dedup();

        let dir = self.repo_dir(repo);
        if let Err(e) = cache::write_ref(&dir, &repo.revision, &commit) {
            tracing::warn!(
                "cannot record refs/{} in {}: {e}",
                repo.revision,
                dir.display()
            );
        }
        if let Err(e) = cache::write_listing(&cfg.listings_dir, repo, &commit, &files) {
            tracing::warn!(
                "cannot record the listing of {repo} in {}: {e}",
                cfg.listings_dir.display()
            );
        }
        Ok(self.make_snapshot(repo, commit, files))
    }

    /// Every file of `commit` from the tree API, page by page (for answers without
    /// `siblings`).
    fn tree_files(&self, repo: &RepoRef, commit: &str) -> Result<Vec<String>, HubError> {
        let cfg = &self.inner.cfg;
        let mut next = Some(format!(
            "{}/api/{}/{}/tree/{commit}?recursive=true",
            cfg.endpoint,
            repo.kind.plural(),
            repo.id
        ));
        let mut files = Vec::new();
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > 100_000 {
                return Err(HubError::BadResponse {
                    url,
                    reason: "the file listing does not end".into(),
                });
            }
            let (_, entries, link) = self.get_json::<Vec<TreeEntry>>(repo, &url)?;
            files.extend(
                entries
                    .into_iter()
                    .filter(|e| e.kind == "file")
                    .map(|e| e.path),
            );
            next = link;
        }
        Ok(files)
    }

    /// GETs `url` from the API and parses its JSON, retrying a body cut short. Returns the URL
    /// answered, the value and the `rel="next"` link, if any.
    fn get_json<T: DeserializeOwned>(
        &self,
        repo: &RepoRef,
        url: &str,
    ) -> Result<(String, T, Option<String>), HubError> {
        let cfg = &self.inner.cfg;
        let http = &self.inner.http;
        let mut failed = 0;
        loop {
            let (url, mut resp) = http.get(url, false)?;
            if !resp.status().is_success() {
                if resp.status().is_redirection() {
                    return Err(HubError::BadResponse {
                        url,
                        reason: format!("redirect to another host ({})", resp.status()),
                    });
                }
                return Err(http::repo_error(
                    http,
                    &cfg.endpoint,
                    repo,
                    &url,
                    resp,
                    None,
                ));
            }
            let next = http::header(&resp, "link")
                .and_then(http::next_link)
                .map(|l| http::join_url(&url, &l));
            match resp
                .body_mut()
                .with_config()
                .limit(MAX_LISTING_BYTES)
                .read_to_string()
            {
                Ok(text) => {
                    let value = serde_json::from_str(&text).map_err(|e| HubError::BadResponse {
                        url: url.clone(),
                        reason: format!("unexpected JSON: {e}"),
                    })?;
                    return Ok((url, value, next));
                }
                Err(e @ (ureq::Error::Io(_) | ureq::Error::Timeout(_))) => {
                    failed += 1;
                    if failed >= http.retry().tries.max(1) {
                        return Err(http::unreachable(
                            &url,
                            failed,
                            format!("connection lost while reading: {e}"),
                            Some(Box::new(e)),
                        ));
                    }
                    http::backoff(http.retry(), failed);
                }
                Err(e) => {
                    return Err(HubError::BadResponse {
                        url,
                        reason: e.to_string(),
                    });
                }
            }
        }
    }
}
