//! The `huggingface_hub` cache layout, kept identical so that Python and chatspace share one
//! cache in both directions:
//!
//! ```text
//! {cache}/datasets--org--name/
//!     blobs/{etag}                  file contents, named by ETag (git sha1 or LFS sha256)
//!     blobs/{etag}.incomplete       a download in progress (resumed with Range)
//!     refs/{revision}               the commit a branch or tag points at, no newline
//!     snapshots/{commit}/{path}     relative symlink to ../../blobs/{etag}
//! {cache}/.locks/datasets--org--name/{etag}.lock   held while a blob is downloaded
//! ```
//!
//! chatspace also records every listing it got from the API under
//! `$HF_HOME/chatspace/listings/{repo folder}/{commit}.json`, so that offline runs know every
//! file of a revision, not only the ones already downloaded.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::error::HubError;
use super::repo::{RepoRef, is_commit};

/// The repository's folder in the cache.
pub fn repo_dir(cache_dir: &Path, repo: &RepoRef) -> PathBuf {
    cache_dir.join(repo.folder_name())
}

/// `blobs/{etag}`.
pub fn blob_path(repo_dir: &Path, etag: &str) -> PathBuf {
    repo_dir.join("blobs").join(etag)
}

/// `blobs/{etag}.incomplete`.
pub fn incomplete_path(repo_dir: &Path, etag: &str) -> PathBuf {
    repo_dir.join("blobs").join(format!("{etag}.incomplete"))
}

/// `.locks/{repo folder}/{etag}.lock`, the lock file `huggingface_hub` takes too.
pub fn lock_path(cache_dir: &Path, repo: &RepoRef, etag: &str) -> PathBuf {
    cache_dir
        .join(".locks")
        .join(repo.folder_name())
        .join(format!("{etag}.lock"))
}

/// `snapshots/{commit}`.
pub fn snapshot_dir(repo_dir: &Path, commit: &str) -> PathBuf {
    repo_dir.join("snapshots").join(commit)
}

/// `snapshots/{commit}/{path}`; `path` must have passed [`check_repo_path`].
pub fn snapshot_file(repo_dir: &Path, commit: &str, path: &str) -> PathBuf {
    let mut p = snapshot_dir(repo_dir, commit);
    p.extend(path.split('/'));
    p
}

/// `refs/{revision}`, a revision with `/` making subfolders (`refs/refs/convert/parquet`).
fn ref_path(repo_dir: &Path, revision: &str) -> PathBuf {
    let mut p = repo_dir.join("refs");
    p.extend(revision.split('/'));
    p
}

/// Why `path` cannot name a file inside a repository (or a ref inside `refs/`), if it cannot:
/// it must be relative, use `/` only, and have no empty, `.` or `..` parts.
pub fn path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("it is empty");
    }
    if path.contains('\\') || path.contains('\0') {
        return Some("it contains a backslash or NUL");
    }
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Some("it has an empty, `.` or `..` part");
    }
    None
}

/// Checks a repository file path before it is joined onto a cache folder.
pub fn check_repo_path(repo: &RepoRef, path: &str) -> Result<(), HubError> {
    match path_problem(path) {
        None => Ok(()),
        Some(reason) => Err(HubError::InvalidPath {
            kind: repo.kind,
            id: repo.id.clone(),
            path: path.to_string(),
            reason,
        }),
    }
}

/// Is `etag` usable as a blob file name?
pub fn etag_is_safe(etag: &str) -> bool {
    !etag.is_empty()
        && etag.len() <= 128
        && etag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// The commit `revision` points at according to the cache: the revision itself when it is a
/// commit, else the content of `refs/{revision}`; `None` when there is no such ref.
pub fn read_ref(repo_dir: &Path, revision: &str) -> io::Result<Option<String>> {
    if is_commit(revision) {
        return Ok(Some(revision.to_string()));
    }
    if path_problem(revision).is_some() {
        return Ok(None);
    }
    match std::fs::read_to_string(ref_path(repo_dir, revision)) {
        Ok(text) => {
            let commit = text.trim();
            Ok(is_commit(commit).then(|| commit.to_string()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Records that `revision` points at `commit` (nothing to do when the revision is the commit,
/// or the ref already says so). Written to a temporary name and renamed.
pub fn write_ref(repo_dir: &Path, revision: &str, commit: &str) -> io::Result<()> {
    if revision == commit || path_problem(revision).is_some() {
        return Ok(());
    }
    let path = ref_path(repo_dir, revision);
    if std::fs::read_to_string(&path).is_ok_and(|t| t.trim() == commit) {
        return Ok(());
    }
    write_atomic(&path, commit.as_bytes())
}

/// Writes `bytes` to `path` through a hidden temporary file in the same folder and a rename,
/// creating the folder first.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("a file path has a parent");
    std::fs::create_dir_all(dir)?;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().expect("a file path has a name");
    let tmp = dir.join(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The link target for `path` inside a snapshot: `../../blobs/{etag}` with one more `../` for
/// each folder of `path`.
pub fn blob_link_target(path: &str, etag: &str) -> PathBuf {
    let depth = path.matches('/').count() + 2;
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.push("blobs");
    target.push(etag);
    target
}

/// Makes `snapshots/{commit}/{path}` point at `blobs/{etag}` (a relative symlink; a copy where
/// symlinks are not available), replacing a dangling or different link. Returns the path.
pub fn link_blob(
    repo_dir: &Path,
    commit: &str,
    path: &str,
    etag: &str,
) -> Result<PathBuf, HubError> {
    let link = snapshot_file(repo_dir, commit, path);
    let parent = link.parent().expect("a snapshot file has a parent");
    std::fs::create_dir_all(parent).map_err(|source| HubError::Cache {
        action: "create",
        path: parent.to_path_buf(),
        source,
    })?;
    let target = blob_link_target(path, etag);
    make_link(&target, &blob_path(repo_dir, etag), &link).map_err(|source| HubError::Cache {
        action: "link",
        path: link.clone(),
        source,
    })?;
    Ok(link)
}

#[cfg(unix)]
fn make_link(target: &Path, _blob: &Path, link: &Path) -> io::Result<()> {
    if let Ok(existing) = std::fs::read_link(link) {
        if existing == target {
            return Ok(());
        }
        std::fs::remove_file(link)?;
    } else if link.exists() {
        // A regular file someone placed here (huggingface_hub without symlinks): keep it.
        return Ok(());
    }
    match std::os::unix::fs::symlink(target, link) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && link.exists() => Ok(()),
        other => other,
    }
}

#[cfg(not(unix))]
fn make_link(_target: &Path, blob: &Path, link: &Path) -> io::Result<()> {
    if !link.exists() {
        std::fs::copy(blob, link)?;
    }
    Ok(())
}

/// What chatspace records about one revision's files, for offline runs.
#[derive(Debug, Serialize, Deserialize)]
pub struct Listing {
    /// `model` or `dataset`.
    pub kind: String,
    /// The repository id.
    pub id: String,
    /// The revision asked for when it was recorded.
    pub revision: String,
    /// The commit.
    pub commit: String,
    /// Every file path, sorted.
    pub files: Vec<String>,
}

/// `{listings}/{repo folder}/{commit}.json`.
pub fn listing_path(listings_dir: &Path, repo: &RepoRef, commit: &str) -> PathBuf {
    listings_dir
        .join(repo.folder_name())
        .join(format!("{commit}.json"))
}

/// Records a listing (atomically).
pub fn write_listing(
    listings_dir: &Path,
    repo: &RepoRef,
    commit: &str,
    files: &[String],
) -> io::Result<()> {
    let listing = Listing {
        kind: repo.kind.as_str().to_string(),
        id: repo.id.clone(),
        revision: repo.revision.clone(),
        commit: commit.to_string(),
        files: files.to_vec(),
    };
    let json = serde_json::to_vec_pretty(&listing).map_err(io::Error::other)?;
    write_atomic(&listing_path(listings_dir, repo, commit), &json)
}

/// The recorded listing of `commit`, if there is a readable one.
pub fn read_listing(listings_dir: &Path, repo: &RepoRef, commit: &str) -> Option<Vec<String>> {
    let path = listing_path(listings_dir, repo, commit);
    let bytes = std::fs::read(&path).ok()?;
    match serde_json::from_slice::<Listing>(&bytes) {
        Ok(l) if l.commit == commit => Some(l.files),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!("ignoring unreadable listing {}: {e}", path.display());
            None
        }
    }
}

/// Every file present under `snapshots/{commit}` (links whose blob is missing excluded), as
/// sorted repository paths; `None` when the folder does not exist.
pub fn files_in_snapshot(repo_dir: &Path, commit: &str) -> Option<Vec<String>> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let path = entry.path();
            // `metadata` follows links: a dangling link is skipped.
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => walk(&path, &rel, out),
                Ok(_) => out.push(rel),
                Err(_) => {}
            }
        }
    }
    let dir = snapshot_dir(repo_dir, commit);
    if !dir.is_dir() {
        return None;
    }
    let mut out = Vec::new();
    walk(&dir, "", &mut out);
    out.sort();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::super::repo::RepoKind;
    use super::*;

    const C: &str = "0123456789abcdef0123456789abcdef01234567";

    fn repo() -> RepoRef {
        RepoRef::new(RepoKind::Dataset, "org/name")
    }

    #[test]
    fn paths_follow_the_layout() {
        let cache = Path::new("/c");
        let dir = repo_dir(cache, &repo());
        assert_eq!(dir, Path::new("/c/datasets--org--name"));
        assert_eq!(
            blob_path(&dir, "abc"),
            Path::new("/c/datasets--org--name/blobs/abc")
        );
        assert_eq!(
            incomplete_path(&dir, "abc"),
            Path::new("/c/datasets--org--name/blobs/abc.incomplete")
        );
        assert_eq!(
            snapshot_file(&dir, C, "data/x.parquet"),
            dir.join("snapshots").join(C).join("data").join("x.parquet")
        );
        assert_eq!(
            lock_path(cache, &repo(), "abc"),
            Path::new("/c/.locks/datasets--org--name/abc.lock")
        );
        assert_eq!(
            ref_path(&dir, "refs/convert/parquet"),
            Path::new("/c/datasets--org--name/refs/refs/convert/parquet")
        );
    }

    #[test]
    fn link_targets_climb_one_level_per_folder() {
        assert_eq!(blob_link_target("a.txt", "e"), Path::new("../../blobs/e"));
        assert_eq!(
            blob_link_target("data/all/x.parquet", "e"),
            Path::new("../../../../blobs/e")
        );
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in ["", "/abs", "a//b", "../x", "a/./b", "a/..", "a\\b", "a/"] {
            assert!(path_problem(bad).is_some(), "{bad}");
            assert!(check_repo_path(&repo(), bad).is_err(), "{bad}");
        }
        for ok in ["a", "data/train-0.parquet", ".gitattributes", "a/.hidden/b"] {
            assert!(path_problem(ok).is_none(), "{ok}");
        }
        assert!(etag_is_safe("a1b2"));
        assert!(!etag_is_safe("../x") && !etag_is_safe("") && !etag_is_safe("a/b"));
    }

    #[test]
    fn refs_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("datasets--org--name");
        assert_eq!(read_ref(&dir, "main").unwrap(), None);
        write_ref(&dir, "main", C).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("refs/main")).unwrap(), C);
        assert_eq!(read_ref(&dir, "main").unwrap().as_deref(), Some(C));
        write_ref(&dir, "refs/convert/parquet", C).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("refs/refs/convert/parquet")).unwrap(),
            C
        );
        // A commit resolves to itself and needs no ref.
        let other = "f".repeat(40);
        write_ref(&dir, &other, &other).unwrap();
        assert!(!dir.join("refs").join(&other).exists());
        assert_eq!(read_ref(&dir, &other).unwrap(), Some(other));
        // Python writes refs without a newline, but tolerate one; garbage is no ref.
        std::fs::write(dir.join("refs/v1"), format!("{C}\n")).unwrap();
        assert_eq!(read_ref(&dir, "v1").unwrap().as_deref(), Some(C));
        std::fs::write(dir.join("refs/v2"), "nonsense").unwrap();
        assert_eq!(read_ref(&dir, "v2").unwrap(), None);
        // No temporary files are left next to refs.
        let names: Vec<_> = std::fs::read_dir(dir.join("refs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[cfg(unix)]
    #[test]
    fn snapshot_links_are_relative_and_resolve() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("datasets--org--name");
        std::fs::create_dir_all(dir.join("blobs")).unwrap();
        std::fs::write(blob_path(&dir, "e1"), b"one").unwrap();
        std::fs::write(blob_path(&dir, "e2"), b"two").unwrap();
        let link = link_blob(&dir, C, "data/all/x.parquet", "e1").unwrap();
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("../../../../blobs/e1")
        );
        assert_eq!(std::fs::read(&link).unwrap(), b"one");
        // Idempotent, and a different blob replaces the link.
        link_blob(&dir, C, "data/all/x.parquet", "e1").unwrap();
        link_blob(&dir, C, "data/all/x.parquet", "e2").unwrap();
        assert_eq!(std::fs::read(&link).unwrap(), b"two");
        let top = link_blob(&dir, C, "README.md", "e1").unwrap();
        assert_eq!(
            std::fs::read_link(&top).unwrap(),
            Path::new("../../blobs/e1")
        );
        // A dangling link is not listed.
        std::os::unix::fs::symlink("../../blobs/gone", snapshot_file(&dir, C, "gone.txt")).unwrap();
        assert_eq!(
            files_in_snapshot(&dir, C).unwrap(),
            ["README.md", "data/all/x.parquet"]
        );
        assert_eq!(files_in_snapshot(&dir, &"e".repeat(40)), None);
    }

    #[test]
    fn listings_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let files = vec!["README.md".to_string(), "data/x.parquet".to_string()];
        write_listing(tmp.path(), &repo(), C, &files).unwrap();
        assert!(
            tmp.path()
                .join("datasets--org--name")
                .join(format!("{C}.json"))
                .is_file()
        );
        assert_eq!(read_listing(tmp.path(), &repo(), C), Some(files));
        assert_eq!(read_listing(tmp.path(), &repo(), &"e".repeat(40)), None);
    }
}
