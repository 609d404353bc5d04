//! Downloading one file of a snapshot into the cache, the way `huggingface_hub` does:
//!
//! 1. `snapshots/{commit}/{path}` already resolves: done, no network.
//! 2. `GET {endpoint}/{prefix}{id}/resolve/{commit}/{path}` with the token. Small files answer
//!    200 with their `ETag`; LFS files answer a redirect to a file host whose headers carry
//!    `X-Linked-Etag` (the sha256) and `X-Linked-Size`. The file host is asked without the
//!    token.
//! 3. Under the lock `.locks/{repo folder}/{etag}.lock`, the bytes go to
//!    `blobs/{etag}.incomplete` (resumed with `Range` where one exists, also after a connection
//!    is lost), are checked against the size and, for LFS files, the sha256, synced, and renamed
//!    to `blobs/{etag}`.
//! 4. `snapshots/{commit}/{path}` becomes a relative link to the blob.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use ureq::Body;
use ureq::http::Response;

use super::cache;
use super::client::{Hub, Snapshot};
use super::error::HubError;
use super::http::{self, Fail};
use super::repo::quote;

/// Redirects followed while fetching the bytes.
const MAX_REDIRECTS: u32 = 5;

/// Read buffer for bodies.
const CHUNK: usize = 256 * 1024;

impl Hub {
    /// The local path (inside [`Snapshot::dir`]) of `path`, downloading it into the cache if it
    /// is not there. A file under its final name is always complete and verified.
    pub fn download(&self, snap: &Snapshot, path: &str) -> Result<PathBuf, HubError> {
        let repo = &snap.repo;
        cache::check_repo_path(repo, path)?;
        let local = snap.local_path(path);
        if local.exists() {
            return Ok(local);
        }
        let cfg = self.config();
        if cfg.offline {
            return Err(HubError::OfflineFile {
                kind: repo.kind,
                id: repo.id.clone(),
                revision: repo.revision.clone(),
                path: path.to_string(),
                cache: snap.dir(),
            });
        }
        let url = format!(
            "{}/{}{}/resolve/{}/{}",
            cfg.endpoint,
            repo.kind.url_prefix(),
            repo.id,
            snap.commit,
            quote(path, "/")
        );
        let (answered, resp) = self.http().get(&url, true)?;
        let status = resp.status();
        if !status.is_redirection() && status.as_u16() != 200 {
            return Err(http::repo_error(
                self.http(),
                &cfg.endpoint,
                repo,
                &answered,
                resp,
                Some((&repo.revision, path)),
            ));
        }
        let etag = http::header(&resp, "x-linked-etag")
            .or_else(|| http::header(&resp, "etag"))
            .map(http::normalize_etag)
            .unwrap_or_default();
        if !cache::etag_is_safe(&etag) {
            return Err(HubError::BadResponse {
                url: http::redact(&answered).to_string(),
                reason: format!("no usable ETag for {path} (got {etag:?})"),
            });
        }
        let size = http::header_u64(&resp, "x-linked-size").or_else(|| {
            let encoded = http::header(&resp, "content-encoding").is_some_and(|e| e != "identity");
            (status.as_u16() == 200 && !encoded)
                .then(|| http::header_u64(&resp, "content-length"))
                .flatten()
        });
        let (fetch_url, pending) = if status.is_redirection() {
            match http::redirect_target(&answered, &resp) {
                Some(target) => (target, None),
                None => {
                    return Err(HubError::BadResponse {
                        url: answered,
                        reason: format!("{status} without a Location"),
                    });
                }
            }
        } else {
            (answered, Some(resp))
        };

        let repo_dir = snap.repo_dir();
        let blob = cache::blob_path(repo_dir, &etag);
        if !blob.exists() {
            let lock_file = cache::lock_path(&cfg.cache_dir, repo, &etag);
            let _lock = lock(&lock_file)?;
            // Another thread or process may have finished it while we waited.
            if !blob.exists() {
                let target = Target {
                    incomplete: cache::incomplete_path(repo_dir, &etag),
                    blob: blob.clone(),
                    size,
                    sha256: is_sha256(&etag).then(|| etag.clone()),
                };
                self.fetch(fetch_url, pending, &target)?;
            }
        }
        cache::link_blob(repo_dir, &snap.commit, path, &etag)
    }

    /// Gets the bytes at `url` into `target.incomplete`, resuming after lost connections,
    /// checks them and renames the file to `target.blob`. `pending` is an answer to `url`
    /// already received (used when nothing is on disk yet).
    fn fetch(
        &self,
        mut url: String,
        mut pending: Option<Response<Body>>,
        target: &Target,
    ) -> Result<(), HubError> {
        let http = self.http();
        let retry = http.retry();
        let mut part = Partial::open(&target.incomplete, target.sha256.is_some())?;
        let mut failed = 0;
        let mut redirects = 0;
        loop {
            if let Some(size) = target.size {
                if part.len == size {
                    break;
                }
                if part.len > size {
                    part.reset()?;
                }
            }
            let answer = match pending.take() {
                Some(resp) if part.len == 0 => Ok(resp),
                _ => http.get_once(&url, Some(part.len), true),
            };
            let written_before = part.written;
            let outcome = match answer {
                Ok(resp) if resp.status().is_redirection() => {
                    redirects += 1;
                    match http::redirect_target(&url, &resp) {
                        Some(next) if redirects <= MAX_REDIRECTS => {
                            url = next;
                            continue;
                        }
                        _ => {
                            return Err(HubError::BadResponse {
                                url: http::redact(&url).to_string(),
                                reason: "too many redirects, or one without a Location".into(),
                            });
                        }
                    }
                }
                Ok(resp) => receive(&url, resp, &mut part, target.size),
                Err(fail) => Err(fail),
            };
            match outcome {
                Ok(()) => break,
                Err(Fail::Fatal(e)) => return Err(e),
                Err(Fail::Transient { reason, source }) => {
                    if part.written > written_before {
                        failed = 0;
                    }
                    failed += 1;
                    if failed >= retry.tries.max(1) {
                        part.flush()?;
                        return Err(http::unreachable(&url, failed, reason, source));
                    }
                    tracing::debug!(
                        "download of {} interrupted at byte {} ({reason}); resuming",
                        http::redact(&url),
                        part.len
                    );
                    http::backoff(retry, failed);
                }
            }
        }
        part.finish(&url, target)
    }
}

/// Where a blob goes and what it must be.
struct Target {
    incomplete: PathBuf,
    blob: PathBuf,
    /// The size announced by the Hub, when it announced one.
    size: Option<u64>,
    /// The sha256 (LFS files, whose ETag is one).
    sha256: Option<String>,
}

/// Is `etag` a sha256 (an LFS file) rather than a git blob sha1?
fn is_sha256(etag: &str) -> bool {
    etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Takes the download lock shared with `huggingface_hub` (an exclusive `flock`), waiting for
/// whoever holds it; released when the file is dropped.
fn lock(path: &Path) -> Result<File, HubError> {
    let err = |source| HubError::Cache {
        action: "lock",
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(err)?;
    file.lock().map_err(err)?;
    Ok(file)
}

/// Copies one answer's body onto the partial file.
fn receive(
    url: &str,
    resp: Response<Body>,
    part: &mut Partial,
    size: Option<u64>,
) -> Result<(), Fail> {
    let status = resp.status().as_u16();
    match status {
        200 => part.reset()?,
        206 => {
            let range = http::header(&resp, "content-range").and_then(http::parse_content_range);
            if !matches!(range, Some((start, _)) if start == part.len) {
                part.reset()?;
                return Err(Fail::Transient {
                    reason: format!("the server answered the wrong range ({range:?})"),
                    source: None,
                });
            }
        }
        416 => {
            part.reset()?;
            return Err(Fail::Transient {
                reason: "the server refused the range asked for".into(),
                source: None,
            });
        }
        _ => {
            let mut resp = resp;
            let body = resp
                .body_mut()
                .with_config()
                .limit(4096)
                .lossy_utf8(true)
                .read_to_string()
                .unwrap_or_default();
            return Err(Fail::Fatal(HubError::Status {
                url: http::redact(url).to_string(),
                status,
                message: body.split_whitespace().collect::<Vec<_>>().join(" "),
            }));
        }
    }
    let mut reader = resp.into_body().into_reader();
    let mut buf = vec![0u8; CHUNK];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => part.write(&buf[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Fail::Transient {
                    reason: format!("connection lost after {} bytes: {e}", part.len),
                    source: Some(Box::new(e)),
                });
            }
        }
    }
    match size {
        Some(size) if part.len < size => Err(Fail::Transient {
            reason: format!("the connection closed after {} of {size} bytes", part.len),
            source: None,
        }),
        Some(size) if part.len > size => {
            let got = part.len;
            part.discard();
            Err(Fail::Fatal(HubError::Corrupt {
                url: http::redact(url).to_string(),
                reason: format!("{got} bytes where {size} were announced"),
            }))
        }
        _ => Ok(()),
    }
}

/// `blobs/{etag}.incomplete` being written, with the sha256 of what it holds so far.
struct Partial {
    path: PathBuf,
    file: BufWriter<File>,
    /// Bytes in the file (buffered ones included).
    len: u64,
    /// Bytes written by this process, for telling progress from failure.
    written: u64,
    hasher: Option<Sha256>,
}

impl Partial {
    /// Opens (or creates) the partial file, hashing what is already there when `hash`.
    fn open(path: &Path, hash: bool) -> Result<Partial, HubError> {
        let err = |action, source| HubError::Cache {
            action,
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err("create", e))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| err("open", e))?;
        let mut hasher = hash.then(Sha256::new);
        let mut len = 0;
        if let Some(h) = hasher.as_mut() {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = file.read(&mut buf).map_err(|e| err("read", e))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                len += n as u64;
            }
        }
        let end = file.seek(SeekFrom::End(0)).map_err(|e| err("read", e))?;
        if hasher.is_some() && end != len {
            return Err(err(
                "read",
                std::io::Error::other("the file changed while read"),
            ));
        }
        if end > 0 {
            tracing::debug!("resuming {} at byte {end}", path.display());
        }
        Ok(Partial {
            path: path.to_path_buf(),
            file: BufWriter::with_capacity(1 << 20, file),
            len: end,
            written: 0,
            hasher,
        })
    }

    fn io_error(&self, action: &'static str, source: std::io::Error) -> HubError {
        HubError::Cache {
            action,
            path: self.path.clone(),
            source,
        }
    }

    /// Empties the file.
    fn reset(&mut self) -> Result<(), HubError> {
        let result = (|| {
            self.file.flush()?;
            let f = self.file.get_mut();
            f.set_len(0)?;
            f.seek(SeekFrom::Start(0)).map(|_| ())
        })();
        result.map_err(|e| self.io_error("write", e))?;
        self.len = 0;
        if self.hasher.is_some() {
            self.hasher = Some(Sha256::new());
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), HubError> {
        self.file
            .write_all(bytes)
            .map_err(|e| self.io_error("write", e))?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(bytes);
        }
        self.len += bytes.len() as u64;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), HubError> {
        self.file.flush().map_err(|e| self.io_error("write", e))
    }

    /// Removes the file (it cannot become the blob).
    fn discard(&mut self) {
        let _ = self.file.flush();
        let _ = std::fs::remove_file(&self.path);
    }

    /// Checks the sha256, syncs and renames the file to the blob.
    fn finish(mut self, url: &str, target: &Target) -> Result<(), HubError> {
        if let (Some(want), Some(h)) = (&target.sha256, self.hasher.take()) {
            let got = hex(&h.finalize());
            if !got.eq_ignore_ascii_case(want) {
                self.discard();
                return Err(HubError::Corrupt {
                    url: http::redact(url).to_string(),
                    reason: format!("sha256 {got}, expected {want}"),
                });
            }
        }
        self.flush()?;
        self.file
            .get_ref()
            .sync_all()
            .map_err(|e| self.io_error("sync", e))?;
        std::fs::rename(&self.path, &target.blob).map_err(|e| self.io_error("rename", e))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_files_resume_with_their_hash() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("blobs/e.incomplete");
        let mut p = Partial::open(&path, true).unwrap();
        p.write(b"hello ").unwrap();
        p.flush().unwrap();
        drop(p);
        let mut p = Partial::open(&path, true).unwrap();
        assert_eq!(p.len, 6);
        p.write(b"world").unwrap();
        let want = hex(&Sha256::digest(b"hello world"));
        let target = Target {
            incomplete: path.clone(),
            blob: tmp.path().join("blobs/e"),
            size: Some(11),
            sha256: Some(want),
        };
        p.finish("http://x/y", &target).unwrap();
        assert_eq!(std::fs::read(&target.blob).unwrap(), b"hello world");
        assert!(!path.exists());
    }

    #[test]
    fn a_wrong_hash_removes_the_partial_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("e.incomplete");
        let mut p = Partial::open(&path, true).unwrap();
        p.write(b"bad").unwrap();
        let target = Target {
            incomplete: path.clone(),
            blob: tmp.path().join("e"),
            size: None,
            sha256: Some("0".repeat(64)),
        };
        let err = p.finish("http://x/y?sig=secret", &target).unwrap_err();
        assert!(matches!(err, HubError::Corrupt { .. }), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(!path.exists() && !target.blob.exists());
    }

    #[test]
    fn sha256_etags() {
        assert!(is_sha256(&"a".repeat(64)));
        assert!(!is_sha256(&"a".repeat(40)));
    }
}
