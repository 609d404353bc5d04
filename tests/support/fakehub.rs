//! A fake Hugging Face Hub: an HTTP/1.1 server on `127.0.0.1` that answers the Hub's API, `resolve`
//! and CDN requests for repositories built in memory from local files.
//!
//! It speaks the real Hub's HTTP shape, as far as a client that fetches models and datasets sees
//! it:
//!
//! - `GET /api/{models|datasets}/{id}` and `.../revision/{revision}`: repository info (`sha`,
//!   `siblings`, `cardData` from the README's YAML front matter, `private`, `gated`).
//! - `GET /api/{models|datasets}/{id}/tree/{revision}[/{path}]?recursive=true`: the file listing,
//!   paginated with a `Link: <...>; rel="next"` header (see [`FakeHub::set_tree_page_size`]).
//! - `GET|HEAD /{id}/resolve/{revision}/{path}` (models) and `/datasets/{id}/resolve/...`: small
//!   files answer 200 with an `ETag` (the git blob id); LFS files answer 302 to
//!   `http://localhost:{port}/cdn/{sha256}?...`, a *different host* from the endpoint
//!   `http://127.0.0.1:{port}`, so a client must not send its token there.
//! - `GET|HEAD /cdn/{sha256}`: the content, with `Range` support. An `Authorization` header there
//!   is a violation: it is counted ([`FakeHub::cdn_auth_violations`]) and answered 400, as a signed
//!   storage URL would be.
//!
//! Errors carry `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`, `GatedRepo`)
//! and `X-Error-Message` headers and a JSON body `{"error": ...}`. An unknown or private repository
//! answers 401 to an anonymous request and 404 to a request with a token that cannot see it; a
//! gated repository shows its info and tree to anyone but answers `resolve` with 401 (no token) or
//! 403 (a token without access).
//!
//! Every response closes its connection (`Connection: close`); each connection has its own thread.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// Files at least this large are stored in LFS whatever their name (10 MiB, as the Hub does).
pub const LFS_SIZE_THRESHOLD: u64 = 10 * 1024 * 1024;

/// Name endings that are always stored in LFS.
pub const LFS_SUFFIXES: &[&str] = &[".onnx", ".onnx_data", ".parquet", ".bin", ".safetensors"];

/// `(config, split, rows of each Parquet file)` of [`FakeRepo::smoltalk_like_dataset`], in the
/// order the rows were taken from `shared/data/debian-chat.parquet`. Files are named
/// `data/{config}/{split}-{i:05}-of-{n:05}.parquet`.
pub const SMOLTALK_LIKE_SPLITS: &[(&str, &str, &[usize])] = &[
    ("all", "train", &[200, 200, 200]),
    ("all", "test", &[100]),
    ("small", "train", &[50, 50]),
    ("small", "test", &[20]),
];

/// Rows of `default/train/0000.parquet` and `default/train/0001.parquet` in the
/// `refs/convert/parquet` revision of [`FakeRepo::parquet_converted_only`].
pub const PARQUET_CONVERTED_ROWS: &[usize] = &[150, 100];

/// The revision the Hub's dataset viewer writes its Parquet conversion to.
pub const PARQUET_REVISION: &str = "refs/convert/parquet";

/// Whether a repository is a model or a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RepoKind {
    /// `/api/models/...`, `/{id}/resolve/...`.
    Model,
    /// `/api/datasets/...`, `/datasets/{id}/resolve/...`.
    Dataset,
}

impl RepoKind {
    fn plural(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }

    fn singular(self) -> &'static str {
        match self {
            RepoKind::Model => "model",
            RepoKind::Dataset => "dataset",
        }
    }
}

/// Where a file's content comes from.
#[derive(Clone, Debug)]
pub enum FileSource {
    /// Bytes held in memory.
    Bytes(Arc<[u8]>),
    /// A local file, read when it is hashed and each time it is served.
    Path(PathBuf),
}

impl FileSource {
    /// In-memory content.
    pub fn bytes(content: impl Into<Vec<u8>>) -> FileSource {
        FileSource::Bytes(content.into().into())
    }

    /// A local file, read lazily.
    pub fn path(path: impl Into<PathBuf>) -> FileSource {
        FileSource::Path(path.into())
    }

    fn read_all(&self) -> std::io::Result<Vec<u8>> {
        match self {
            FileSource::Bytes(b) => Ok(b.to_vec()),
            FileSource::Path(p) => std::fs::read(p),
        }
    }
}

/// Who may read a repository.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Access {
    Public,
    /// Visible only with this token.
    Private(String),
    /// Info and tree are public; files need this token.
    Gated(String),
}

/// A repository to serve, built before [`FakeHub::start`]: branches (and other refs such as
/// `refs/convert/parquet`) each with their own files, tags, and who may read it.
///
/// Commit shas are derived from the content: the same files give the same commit.
#[derive(Debug)]
pub struct FakeRepo {
    kind: RepoKind,
    id: String,
    refs: BTreeMap<String, BTreeMap<String, FileSource>>,
    tags: Vec<(String, String)>,
    access: Access,
    temp: Vec<Arc<tempfile::TempDir>>,
}

impl FakeRepo {
    /// An empty repository with a `main` branch.
    pub fn new(kind: RepoKind, id: &str) -> FakeRepo {
        let mut refs = BTreeMap::new();
        refs.insert("main".to_string(), BTreeMap::new());
        FakeRepo {
            kind,
            id: id.to_string(),
            refs,
            tags: Vec::new(),
            access: Access::Public,
            temp: Vec::new(),
        }
    }

    /// An empty model repository.
    pub fn model(id: &str) -> FakeRepo {
        FakeRepo::new(RepoKind::Model, id)
    }

    /// An empty dataset repository.
    pub fn dataset(id: &str) -> FakeRepo {
        FakeRepo::new(RepoKind::Dataset, id)
    }

    /// Adds (or replaces) a file on `main`.
    pub fn with_file(self, path: &str, source: FileSource) -> FakeRepo {
        self.with_file_at("main", path, source)
    }

    /// Adds (or replaces) a file on the branch or ref `revision` (created if new, empty).
    pub fn with_file_at(mut self, revision: &str, path: &str, source: FileSource) -> FakeRepo {
        self.refs
            .entry(revision.to_string())
            .or_default()
            .insert(path.trim_start_matches('/').to_string(), source);
        self
    }

    /// Adds a branch (or ref) `name` holding the files `from` holds now.
    pub fn with_branch(mut self, name: &str, from: &str) -> FakeRepo {
        let files = self
            .refs
            .get(from)
            .unwrap_or_else(|| panic!("{}: no branch {from}", self.id))
            .clone();
        self.refs.insert(name.to_string(), files);
        self
    }

    /// Adds a tag pointing at the commit that the branch or ref `revision` has at start.
    pub fn with_tag(mut self, tag: &str, revision: &str) -> FakeRepo {
        self.tags.push((tag.to_string(), revision.to_string()));
        self
    }

    /// Makes the repository private: only `Authorization: Bearer {token}` sees it.
    pub fn private(mut self, token: &str) -> FakeRepo {
        self.access = Access::Private(token.to_string());
        self
    }

    /// Makes the repository gated (`"gated": "manual"`): info and tree stay public, files need
    /// `Authorization: Bearer {token}`.
    pub fn gated(mut self, token: &str) -> FakeRepo {
        self.access = Access::Gated(token.to_string());
        self
    }

    /// Model or dataset.
    pub fn kind(&self) -> RepoKind {
        self.kind
    }

    /// The repository id (`org/name`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The files of a branch or ref, by repository path.
    pub fn files(&self, revision: &str) -> Option<&BTreeMap<String, FileSource>> {
        self.refs.get(revision)
    }

    /// The real `sentence-transformers/all-MiniLM-L6-v2` layout: every file of
    /// `shared/models/all-MiniLM-L6-v2` at the same relative path (read from there when served),
    /// plus a `README.md` with the model card's front matter and a `.gitattributes`.
    /// `onnx/model.onnx` is an LFS file.
    pub fn minilm_model(id: &str) -> FakeRepo {
        let root = crate::model("all-MiniLM-L6-v2");
        let mut repo = FakeRepo::model(id)
            .with_file(".gitattributes", FileSource::bytes(GITATTRIBUTES))
            .with_file("README.md", FileSource::bytes(MINILM_README));
        for (rel, path) in walk(&root) {
            repo = repo.with_file(&rel, FileSource::Path(path));
        }
        repo
    }

    /// A dataset shaped like `HuggingFaceTB/smoltalk`: a `README.md` whose front matter declares
    /// the configs `all` and `small` with `train` and `test` splits (`data/{config}/{split}-*`),
    /// and several Parquet files per split holding rows of `shared/data/debian-chat.parquet`
    /// (columns `id`, `messages`), laid out as [`SMOLTALK_LIKE_SPLITS`] says. The Parquet files
    /// are written to a temporary folder that lives as long as the repository or the hub serving
    /// it.
    pub fn smoltalk_like_dataset(id: &str) -> FakeRepo {
        let total: usize = SMOLTALK_LIKE_SPLITS
            .iter()
            .flat_map(|(_, _, rows)| rows.iter())
            .sum();
        let batch = debian_chat_rows(total);
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut repo = FakeRepo::dataset(id)
            .with_file(".gitattributes", FileSource::bytes(GITATTRIBUTES))
            .with_file("README.md", FileSource::bytes(SMOLTALK_README));
        let mut offset = 0;
        for (config, split, rows) in SMOLTALK_LIKE_SPLITS {
            for (i, &n) in rows.iter().enumerate() {
                let rel = format!("data/{config}/{split}-{i:05}-of-{:05}.parquet", rows.len());
                let local = dir.path().join(rel.replace('/', "__"));
                write_parquet(&local, &batch.slice(offset, n));
                offset += n;
                repo = repo.with_file(&rel, FileSource::Path(local));
            }
        }
        repo.temp.push(dir);
        repo
    }

    /// A dataset whose `main` holds only a `README.md` without `configs`, a `.gitattributes` and a
    /// non-data `notes.txt`, and whose [`PARQUET_REVISION`] holds `default/train/0000.parquet` and
    /// `default/train/0001.parquet` ([`PARQUET_CONVERTED_ROWS`] rows of
    /// `shared/data/debian-chat.parquet`), as the Hub's Parquet conversion lays them out.
    pub fn parquet_converted_only(id: &str) -> FakeRepo {
        let total: usize = PARQUET_CONVERTED_ROWS.iter().sum();
        let batch = debian_chat_rows(total);
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut repo = FakeRepo::dataset(id)
            .with_file(".gitattributes", FileSource::bytes(GITATTRIBUTES))
            .with_file("README.md", FileSource::bytes(CONVERTED_README))
            .with_file(
                "notes.txt",
                FileSource::bytes("Raw chats live elsewhere; see the Parquet conversion.\n"),
            )
            .with_file_at(
                PARQUET_REVISION,
                ".gitattributes",
                FileSource::bytes(GITATTRIBUTES),
            );
        let mut offset = 0;
        for (i, &n) in PARQUET_CONVERTED_ROWS.iter().enumerate() {
            let local = dir.path().join(format!("{i:04}.parquet"));
            write_parquet(&local, &batch.slice(offset, n));
            offset += n;
            repo = repo.with_file_at(
                PARQUET_REVISION,
                &format!("default/train/{i:04}.parquet"),
                FileSource::Path(local),
            );
        }
        repo.temp.push(dir);
        repo
    }
}

const GITATTRIBUTES: &str = "*.bin filter=lfs diff=lfs merge=lfs -text\n\
*.onnx filter=lfs diff=lfs merge=lfs -text\n\
*.onnx_data filter=lfs diff=lfs merge=lfs -text\n\
*.parquet filter=lfs diff=lfs merge=lfs -text\n\
*.safetensors filter=lfs diff=lfs merge=lfs -text\n";

const MINILM_README: &str = "---
language: en
license: apache-2.0
library_name: sentence-transformers
tags:
- sentence-transformers
- feature-extraction
- sentence-similarity
pipeline_tag: sentence-similarity
---

# all-MiniLM-L6-v2

A sentence-transformers model: it maps sentences to a 384-dimensional dense vector space.
(A fake Hub copy for chatspace's tests.)
";

const SMOLTALK_README: &str = "---
language:
- en
license: apache-2.0
tags:
- synthetic
pretty_name: SmolTalk-like
size_categories:
- n<1K
configs:
- config_name: all
  data_files:
  - split: train
    path: data/all/train-*
  - split: test
    path: data/all/test-*
- config_name: small
  data_files:
  - split: train
    path: data/small/train-*
  - split: test
    path: data/small/test-*
---

# SmolTalk-like

Chat rows (`messages`: a list of `{content, role}`) in the shape of `HuggingFaceTB/smoltalk`,
made from Debian package descriptions for chatspace's tests.
";

const CONVERTED_README: &str = "---
license: mit
pretty_name: Converted only
---

# Converted only

The data of this dataset is only readable through its Parquet conversion.
";

/// Every file under `root`, as (relative path with `/`, full path), sorted.
fn walk(root: &Path) -> Vec<(String, PathBuf)> {
    fn go(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.expect("directory entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let path = entry.path();
            if path.is_dir() {
                go(&path, &rel, out);
            } else {
                out.push((rel, path));
            }
        }
    }
    let mut out = Vec::new();
    go(root, "", &mut out);
    out.sort();
    out
}

/// The first `n` rows of `shared/data/debian-chat.parquet`, as one batch.
fn debian_chat_rows(n: usize) -> arrow::record_batch::RecordBatch {
    use arrow::record_batch::RecordBatchReader;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let path = crate::shared().join("data/debian-chat.parquet");
    let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("debian-chat.parquet metadata")
        .with_batch_size(n)
        .with_limit(n)
        .build()
        .expect("debian-chat.parquet reader");
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .expect("debian-chat.parquet rows");
    let batch = arrow::compute::concat_batches(&schema, &batches).expect("concat");
    assert_eq!(batch.num_rows(), n, "debian-chat.parquet has too few rows");
    batch
}

fn write_parquet(path: &Path, batch: &arrow::record_batch::RecordBatch) {
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;
    let file = File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).expect("writer");
    writer.write(batch).expect("write parquet");
    writer.close().expect("close parquet");
}

/// One request the hub answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLog {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The request path as sent (still percent-encoded), without the query.
    pub path: String,
    /// The query string, without `?`.
    pub query: Option<String>,
    /// The `Host` header.
    pub host: Option<String>,
    /// Whether an `Authorization` header was sent.
    pub had_authorization: bool,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `Range` header.
    pub range: Option<String>,
    /// The status answered.
    pub status: u16,
    /// Body bytes written (0 for `HEAD`).
    pub bytes_sent: u64,
    /// Whether the connection was cut mid-body by [`FakeHub::cut_after`].
    pub cut: bool,
}

/// A running fake Hub (see the module documentation). Stops when dropped.
pub struct FakeHub {
    state: Arc<State>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

struct Failure {
    needle: String,
    remaining: usize,
    status: u16,
}

struct Cut {
    needle: String,
    bytes: u64,
}

struct State {
    port: u16,
    repos: Mutex<Vec<Repo>>,
    /// LFS content by sha256, for `/cdn`.
    blobs: Mutex<HashMap<String, Blob>>,
    log: Mutex<Vec<RequestLog>>,
    cdn_violations: AtomicUsize,
    failures: Mutex<Vec<Failure>>,
    cuts: Mutex<Vec<Cut>>,
    tree_page_size: AtomicUsize,
    stopped: AtomicBool,
    _temp: Vec<Arc<tempfile::TempDir>>,
}

#[derive(Clone)]
struct Blob {
    source: FileSource,
    size: u64,
}

struct Repo {
    kind: RepoKind,
    id: String,
    mongo_id: String,
    access: Access,
    /// Branches and other refs, to commit shas.
    refs: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
    /// Every commit ever made (old ones stay reachable by sha).
    commits: HashMap<String, Arc<Commit>>,
}

struct Commit {
    sha: String,
    files: BTreeMap<String, Entry>,
    card: Option<Value>,
}

#[derive(Clone)]
struct Entry {
    source: FileSource,
    size: u64,
    sha256: String,
    /// The git blob id of what git stores: the content, or for LFS files the pointer.
    blob_oid: String,
    lfs: bool,
    pointer_size: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeHub {
    /// Binds `127.0.0.1:0` (and, where it can, `[::1]` on the same port, so that `localhost`
    /// reaches it either way) and serves `repos` on a background thread.
    pub fn start(repos: Vec<FakeRepo>) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let mut listeners = vec![listener];
        if let Ok(v6) = TcpListener::bind(("::1", addr.port())) {
            listeners.push(v6);
        }
        for l in &listeners {
            l.set_nonblocking(true).expect("non-blocking listener");
        }
        let mut blobs = HashMap::new();
        let mut built = Vec::new();
        let mut temp = Vec::new();
        for repo in repos {
            temp.extend(repo.temp.iter().cloned());
            built.push(build_repo(repo, &mut blobs));
        }
        let state = Arc::new(State {
            port: addr.port(),
            repos: Mutex::new(built),
            blobs: Mutex::new(blobs),
            log: Mutex::new(Vec::new()),
            cdn_violations: AtomicUsize::new(0),
            failures: Mutex::new(Vec::new()),
            cuts: Mutex::new(Vec::new()),
            tree_page_size: AtomicUsize::new(1000),
            stopped: AtomicBool::new(false),
            _temp: temp,
        });
        let thread_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("fakehub-accept".into())
            .spawn(move || accept_loop(thread_state, listeners))
            .expect("spawn accept thread");
        FakeHub {
            state,
            addr,
            thread: Some(thread),
        }
    }

    /// The endpoint to give a client: `http://127.0.0.1:{port}`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    /// The port listened on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops: closes the listeners (new connections are refused) and waits for the accept thread.
    /// Bodies still being sent are cut short.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Every request answered so far, in the order their answers finished.
    pub fn requests(&self) -> Vec<RequestLog> {
        lock(&self.state.log).clone()
    }

    /// The requests whose path contains `path_substring`.
    pub fn requests_matching(&self, path_substring: &str) -> Vec<RequestLog> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.contains(path_substring))
            .collect()
    }

    /// Forgets the requests logged so far.
    pub fn clear_requests(&self) {
        lock(&self.state.log).clear();
    }

    /// How many requests to `/cdn` carried an `Authorization` header (each was answered 400).
    pub fn cdn_auth_violations(&self) -> usize {
        self.state.cdn_violations.load(Ordering::SeqCst)
    }

    /// The next `n` requests whose target (path and query, as sent) contains `path_substring`
    /// are answered `status` (e.g. 500, 503, 429) with a JSON error body, before anything else.
    pub fn set_failures(&self, path_substring: &str, n: usize, status: u16) {
        lock(&self.state.failures).push(Failure {
            needle: path_substring.to_string(),
            remaining: n,
            status,
        });
    }

    /// The next `GET` whose target contains `path_substring` and that answers a file's content
    /// (`/cdn` or a small file's `resolve`) sends its full headers, then only `bytes` bytes of
    /// the body, and closes the connection.
    pub fn cut_after(&self, path_substring: &str, bytes: usize) {
        lock(&self.state.cuts).push(Cut {
            needle: path_substring.to_string(),
            bytes: bytes as u64,
        });
    }

    /// Entries per page of the tree listing (default 1000, as the Hub); more come through a
    /// `Link: <...>; rel="next"` header.
    pub fn set_tree_page_size(&self, n: usize) {
        self.state.tree_page_size.store(n.max(1), Ordering::SeqCst);
    }

    /// The commit sha that `revision` (branch, ref, tag or sha) of a repository points at now.
    pub fn commit(&self, kind: RepoKind, id: &str, revision: &str) -> Option<String> {
        let repos = lock(&self.state.repos);
        let repo = repos.iter().find(|r| r.kind == kind && r.id == id)?;
        repo.resolve(revision).map(|c| c.sha.clone())
    }

    /// Pushes a commit to `branch` (created from nothing if new) that adds or replaces `path`
    /// (`Some`) or deletes it (`None`). Older commits stay reachable by sha. Returns the new sha.
    pub fn put_file(
        &self,
        kind: RepoKind,
        id: &str,
        branch: &str,
        path: &str,
        source: Option<FileSource>,
    ) -> String {
        let mut repos = lock(&self.state.repos);
        let repo = repos
            .iter_mut()
            .find(|r| r.kind == kind && r.id == id)
            .unwrap_or_else(|| panic!("no {} {id}", kind.singular()));
        let mut files = repo
            .refs
            .get(branch)
            .map(|sha| repo.commits[sha].files.clone())
            .unwrap_or_default();
        let path = path.trim_start_matches('/').to_string();
        match source {
            Some(source) => {
                let entry = make_entry(&path, source);
                if entry.lfs {
                    lock(&self.state.blobs).insert(
                        entry.sha256.clone(),
                        Blob {
                            source: entry.source.clone(),
                            size: entry.size,
                        },
                    );
                }
                files.insert(path, entry);
            }
            None => {
                files.remove(&path);
            }
        }
        let commit = make_commit(files);
        let sha = commit.sha.clone();
        repo.commits.insert(sha.clone(), Arc::new(commit));
        repo.refs.insert(branch.to_string(), sha.clone());
        sha
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Repo {
    fn resolve(&self, revision: &str) -> Option<&Arc<Commit>> {
        if let Some(sha) = self.refs.get(revision).or_else(|| self.tags.get(revision)) {
            return self.commits.get(sha);
        }
        if revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()) {
            return self.commits.get(&revision.to_ascii_lowercase());
        }
        None
    }
}

fn is_lfs(path: &str, size: u64) -> bool {
    size >= LFS_SIZE_THRESHOLD || LFS_SUFFIXES.iter().any(|s| path.ends_with(s))
}

type HashCacheKey = (PathBuf, u64, Option<SystemTime>);
type HashCache = Mutex<HashMap<HashCacheKey, (String, Option<String>)>>;

/// Hashes of local files, kept across hubs in one test process: (sha256, git blob id if asked).
fn hash_cache() -> &'static HashCache {
    static CACHE: OnceLock<HashCache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// (size, sha256, git blob id when `want_oid`).
fn hash_source(
    source: &FileSource,
    want_oid: impl Fn(u64) -> bool,
) -> (u64, String, Option<String>) {
    match source {
        FileSource::Bytes(b) => {
            let size = b.len() as u64;
            let oid = want_oid(size).then(|| git_blob_oid(b));
            (size, hex(&Sha256::digest(b)), oid)
        }
        FileSource::Path(p) => {
            let meta = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let size = meta.len();
            let want = want_oid(size);
            let key = (p.clone(), size, meta.modified().ok());
            if let Some((sha, oid)) = lock(hash_cache()).get(&key)
                && (oid.is_some() || !want)
            {
                return (size, sha.clone(), oid.clone());
            }
            let mut file = File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let mut sha256 = Sha256::new();
            let mut sha1 = want.then(|| {
                let mut h = Sha1::new();
                h.update(format!("blob {size}\0").as_bytes());
                h
            });
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = file
                    .read(&mut buf)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                if n == 0 {
                    break;
                }
                sha256.update(&buf[..n]);
                if let Some(h) = sha1.as_mut() {
                    h.update(&buf[..n]);
                }
            }
            let sha = hex(&sha256.finalize());
            let oid = sha1.map(|h| hex(&h.finish()));
            lock(hash_cache()).insert(key, (sha.clone(), oid.clone()));
            (size, sha, oid)
        }
    }
}

fn lfs_pointer(sha256: &str, size: u64) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n")
}

fn make_entry(path: &str, source: FileSource) -> Entry {
    let (size, sha256, oid) = hash_source(&source, |size| !is_lfs(path, size));
    match oid {
        Some(blob_oid) => Entry {
            source,
            size,
            sha256,
            blob_oid,
            lfs: false,
            pointer_size: 0,
        },
        None => {
            let pointer = lfs_pointer(&sha256, size);
            Entry {
                source,
                size,
                blob_oid: git_blob_oid(pointer.as_bytes()),
                sha256,
                lfs: true,
                pointer_size: pointer.len() as u64,
            }
        }
    }
}

fn make_commit(files: BTreeMap<String, Entry>) -> Commit {
    let mut h = Sha1::new();
    for (path, e) in &files {
        h.update(format!("{path}\0{}\0{}\n", e.blob_oid, e.sha256).as_bytes());
    }
    let sha = hex(&h.finish());
    let card = files
        .get("README.md")
        .filter(|e| e.size < 1 << 20)
        .and_then(|e| e.source.read_all().ok())
        .and_then(|b| front_matter(&String::from_utf8_lossy(&b)));
    Commit { sha, files, card }
}

fn build_repo(repo: FakeRepo, blobs: &mut HashMap<String, Blob>) -> Repo {
    let mut refs = BTreeMap::new();
    let mut commits = HashMap::new();
    for (name, files) in repo.refs {
        let entries: BTreeMap<String, Entry> = files
            .into_iter()
            .map(|(path, source)| {
                let entry = make_entry(&path, source);
                (path, entry)
            })
            .collect();
        for e in entries.values().filter(|e| e.lfs) {
            blobs.insert(
                e.sha256.clone(),
                Blob {
                    source: e.source.clone(),
                    size: e.size,
                },
            );
        }
        let commit = make_commit(entries);
        refs.insert(name, commit.sha.clone());
        commits.insert(commit.sha.clone(), Arc::new(commit));
    }
    let tags = repo
        .tags
        .into_iter()
        .map(|(tag, target)| {
            let sha = refs
                .get(&target)
                .cloned()
                .or_else(|| commits.contains_key(&target).then(|| target.clone()))
                .unwrap_or_else(|| panic!("{}: tag {tag} names unknown {target}", repo.id));
            (tag, sha)
        })
        .collect();
    let mongo_id = hex(&Sha1::digest(
        format!("{}/{}", repo.kind.plural(), repo.id).as_bytes(),
    ))[..24]
        .to_string();
    Repo {
        kind: repo.kind,
        id: repo.id,
        mongo_id,
        access: repo.access,
        refs,
        tags,
        commits,
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

fn accept_loop(state: Arc<State>, listeners: Vec<TcpListener>) {
    while !state.stopped.load(Ordering::SeqCst) {
        let mut accepted = false;
        for listener in &listeners {
            match listener.accept() {
                Ok((stream, _)) => {
                    accepted = true;
                    let state = Arc::clone(&state);
                    let _ = std::thread::Builder::new()
                        .name("fakehub-conn".into())
                        .spawn(move || serve_connection(&state, stream));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {}
            }
        }
        if !accepted {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // The listeners close here: from now on connections are refused.
}

struct Request {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }

    fn query_param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then(|| percent_decode(v))
        })
    }

    /// The bearer token, if any (`Some("")` for a non-bearer `Authorization`).
    fn token(&self) -> Option<String> {
        let auth = self.header("authorization")?;
        Some(match auth.split_once(' ') {
            Some((scheme, tok)) if scheme.eq_ignore_ascii_case("bearer") => tok.trim().to_string(),
            _ => String::new(),
        })
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut total = 0usize;
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    parts.next()?.starts_with("HTTP/").then_some(())?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).ok()?;
        total += n;
        if n == 0 || total > 64 * 1024 {
            return None;
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target, None),
    };
    let req = Request {
        method,
        path,
        query,
        headers,
    };
    // Discard a body, if one was sent.
    if let Some(len) = req
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok())
    {
        let _ = std::io::copy(
            &mut reader.by_ref().take(len.min(1 << 20)),
            &mut std::io::sink(),
        );
    }
    Some(req)
}

enum Body {
    Empty,
    Data(Vec<u8>),
    Source {
        source: FileSource,
        start: u64,
        len: u64,
    },
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Data(d) => d.len() as u64,
            Body::Source { len, .. } => *len,
        }
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

impl Response {
    fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    fn json(status: u16, value: &Value) -> Response {
        let mut r = Response::new(status).header("Content-Type", "application/json; charset=utf-8");
        r.body = Body::Data(serde_json::to_vec(value).expect("JSON"));
        r
    }

    fn error(status: u16, code: Option<&str>, message: &str) -> Response {
        let mut r =
            Response::json(status, &json!({ "error": message })).header("X-Error-Message", message);
        if let Some(code) = code {
            r = r.header("X-Error-Code", code);
        }
        r
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn serve_connection(state: &State, stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let Some(req) = read_request(&stream) else {
        return;
    };
    if state.stopped.load(Ordering::SeqCst) {
        return;
    }
    let resp = answer(state, &req);
    let mut log = RequestLog {
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        host: req.header("host").map(str::to_string),
        had_authorization: req.header("authorization").is_some(),
        authorization: req.header("authorization").map(str::to_string),
        range: req.header("range").map(str::to_string),
        status: resp.status,
        bytes_sent: 0,
        cut: false,
    };
    let mut stream = stream;
    send(state, &mut stream, &req, resp, &mut log);
    // Logged before the connection closes, so a client that has read the whole answer finds
    // its request in the log.
    let cut = log.cut;
    lock(&state.log).push(log);
    let _ = stream.flush();
    let _ = stream.shutdown(if cut { Shutdown::Both } else { Shutdown::Write });
}

/// Writes the answer; the caller closes the connection.
fn send(
    state: &State,
    stream: &mut TcpStream,
    req: &Request,
    resp: Response,
    log: &mut RequestLog,
) {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\nServer: fakehub\r\n\r\n",
        resp.body.len()
    ));
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    if req.method != "HEAD" && resp.body.len() > 0 {
        let cut = matches!(resp.body, Body::Source { .. })
            .then(|| take_cut(state, &req.target()))
            .flatten();
        let limit = cut.unwrap_or(u64::MAX).min(resp.body.len());
        log.bytes_sent = match &resp.body {
            Body::Empty => 0,
            Body::Data(d) => match stream.write_all(d) {
                Ok(()) => d.len() as u64,
                Err(_) => 0,
            },
            Body::Source { source, start, .. } => {
                write_source(state, stream, source, *start, limit)
            }
        };
        log.cut = cut.is_some();
    }
}

/// Writes `len` bytes of `source` from `start`; returns how many were written.
fn write_source(
    state: &State,
    stream: &mut TcpStream,
    source: &FileSource,
    start: u64,
    len: u64,
) -> u64 {
    match source {
        FileSource::Bytes(b) => {
            let slice = &b[start as usize..(start + len) as usize];
            match stream.write_all(slice) {
                Ok(()) => len,
                Err(_) => 0,
            }
        }
        FileSource::Path(p) => {
            let Ok(mut file) = File::open(p) else {
                return 0;
            };
            if file.seek(SeekFrom::Start(start)).is_err() {
                return 0;
            }
            let mut buf = vec![0u8; 1 << 16];
            let mut sent = 0u64;
            while sent < len {
                if state.stopped.load(Ordering::SeqCst) {
                    break;
                }
                let want = (len - sent).min(buf.len() as u64) as usize;
                let n = match file.read(&mut buf[..want]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if stream.write_all(&buf[..n]).is_err() {
                    break;
                }
                sent += n as u64;
            }
            sent
        }
    }
}

fn take_cut(state: &State, target: &str) -> Option<u64> {
    let mut cuts = lock(&state.cuts);
    let i = cuts.iter().position(|c| target.contains(&c.needle))?;
    Some(cuts.remove(i).bytes)
}

fn take_failure(state: &State, target: &str) -> Option<u16> {
    let mut failures = lock(&state.failures);
    let f = failures
        .iter_mut()
        .find(|f| f.remaining > 0 && target.contains(&f.needle))?;
    f.remaining -= 1;
    Some(f.status)
}

fn answer(state: &State, req: &Request) -> Response {
    let is_cdn = req.path.starts_with("/cdn/");
    if is_cdn && req.header("authorization").is_some() {
        state.cdn_violations.fetch_add(1, Ordering::SeqCst);
    }
    if let Some(status) = take_failure(state, &req.target()) {
        return Response::error(status, None, "injected failure");
    }
    if req.method != "GET" && req.method != "HEAD" {
        return Response::error(405, None, "Method not allowed").header("Allow", "GET, HEAD");
    }
    let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["cdn", sha] => cdn(state, req, sha),
        ["api", kind @ ("models" | "datasets"), rest @ ..] => {
            let kind = if *kind == "models" {
                RepoKind::Model
            } else {
                RepoKind::Dataset
            };
            api(state, req, kind, rest)
        }
        ["datasets", rest @ ..] => resolve(state, req, RepoKind::Dataset, rest),
        rest => resolve(state, req, RepoKind::Model, rest),
    }
}

/// Splits `segs` into a repository id and the rest: `org/name` when such a repository exists,
/// else a one-segment id when that exists, else `org/name` (unknown).
fn split_id<'a>(state: &State, kind: RepoKind, segs: &'a [&'a str]) -> (String, &'a [&'a str]) {
    let repos = lock(&state.repos);
    let exists = |id: &str| repos.iter().any(|r| r.kind == kind && r.id == id);
    if segs.len() >= 2 {
        let two = format!("{}/{}", percent_decode(segs[0]), percent_decode(segs[1]));
        if exists(&two) {
            return (two, &segs[2..]);
        }
    }
    if let Some(first) = segs.first() {
        let one = percent_decode(first);
        if exists(&one) || segs.len() < 2 {
            return (one, &segs[1..]);
        }
    }
    match segs {
        [org, name, rest @ ..] => (
            format!("{}/{}", percent_decode(org), percent_decode(name)),
            rest,
        ),
        _ => (String::new(), segs),
    }
}

/// The repository's access check. `files`: whether the request reads file content.
fn authorize(
    repo: Option<&Repo>,
    kind: RepoKind,
    id: &str,
    req: &Request,
    files: bool,
) -> Result<(), Response> {
    let token = req.token();
    let not_found = |token: &Option<String>| {
        let status = if token.is_some() { 404 } else { 401 };
        let message = if token.is_some() {
            "Repository not found"
        } else {
            "Repository not found. If the repo is private, make sure you are authenticated."
        };
        Response::error(status, Some("RepoNotFound"), message)
    };
    let Some(repo) = repo else {
        return Err(not_found(&token));
    };
    match &repo.access {
        Access::Public => Ok(()),
        Access::Private(t) => {
            if token.as_deref() == Some(t.as_str()) {
                Ok(())
            } else {
                Err(not_found(&token))
            }
        }
        Access::Gated(t) => {
            if !files || token.as_deref() == Some(t.as_str()) {
                return Ok(());
            }
            let kind = kind.singular();
            Err(match token {
                None => Response::error(
                    401,
                    Some("GatedRepo"),
                    &format!(
                        "Access to {kind} {id} is restricted. You must have access to it and be \
                         authenticated to access it. Please log in."
                    ),
                ),
                Some(_) => Response::error(
                    403,
                    Some("GatedRepo"),
                    &format!(
                        "Access to {kind} {id} is restricted and you are not in the authorized \
                         list. Visit the repository page to ask for access."
                    ),
                ),
            })
        }
    }
}

fn revision_not_found(revision: &str) -> Response {
    Response::error(
        404,
        Some("RevisionNotFound"),
        &format!("Invalid rev id: {revision}"),
    )
}

fn entry_not_found(path: &str) -> Response {
    Response::error(
        404,
        Some("EntryNotFound"),
        &format!("Entry not found: {path}"),
    )
}

const LAST_MODIFIED: &str = "2024-06-01T12:00:00.000Z";
const CREATED_AT: &str = "2024-01-01T00:00:00.000Z";

fn api(state: &State, req: &Request, kind: RepoKind, segs: &[&str]) -> Response {
    if segs.is_empty() {
        return Response::error(404, None, "Not Found");
    }
    let (id, rest) = split_id(state, kind, segs);
    let repos = lock(&state.repos);
    let repo = repos.iter().find(|r| r.kind == kind && r.id == id);
    if let Err(resp) = authorize(repo, kind, &id, req, false) {
        return resp;
    }
    let repo = repo.expect("authorized repo exists");
    match rest {
        [] => info(repo, req, "main"),
        ["revision", revision @ ..] if !revision.is_empty() => {
            let revision: Vec<String> = revision.iter().map(|s| percent_decode(s)).collect();
            info(repo, req, &revision.join("/"))
        }
        ["tree", revision, path @ ..] => {
            let path: Vec<String> = path.iter().map(|s| percent_decode(s)).collect();
            let page_size = state.tree_page_size.load(Ordering::SeqCst);
            tree(
                state.port,
                repo,
                req,
                &percent_decode(revision),
                path.join("/").trim_matches('/'),
                page_size,
            )
        }
        _ => Response::error(404, None, "Not Found"),
    }
}

fn info(repo: &Repo, req: &Request, revision: &str) -> Response {
    let Some(commit) = repo.resolve(revision) else {
        return revision_not_found(revision);
    };
    let blobs = matches!(
        req.query_param("blobs").as_deref(),
        Some("true" | "1" | "True")
    );
    let siblings: Vec<Value> = commit
        .files
        .iter()
        .map(|(path, e)| {
            let mut s = json!({ "rfilename": path });
            if blobs {
                s["size"] = json!(e.size);
                s["blobId"] = json!(e.blob_oid);
                if e.lfs {
                    s["lfs"] = json!({
                        "sha256": e.sha256, "size": e.size, "pointerSize": e.pointer_size
                    });
                }
            }
            s
        })
        .collect();
    let author = repo.id.split_once('/').map(|(org, _)| org);
    let mut v = json!({
        "_id": repo.mongo_id,
        "id": repo.id,
        "author": author,
        "sha": commit.sha,
        "lastModified": LAST_MODIFIED,
        "createdAt": CREATED_AT,
        "private": matches!(repo.access, Access::Private(_)),
        "gated": if matches!(repo.access, Access::Gated(_)) { json!("manual") } else { json!(false) },
        "disabled": false,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": siblings,
        "usedStorage": commit.files.values().map(|e| e.size).sum::<u64>(),
    });
    if repo.kind == RepoKind::Model {
        v["modelId"] = json!(repo.id);
    }
    if let Some(card) = &commit.card {
        v["cardData"] = card.clone();
        if let Some(tags) = card.get("tags").filter(|t| t.is_array()) {
            v["tags"] = tags.clone();
        }
    }
    Response::json(200, &v)
}

fn tree(
    port: u16,
    repo: &Repo,
    req: &Request,
    revision: &str,
    dir: &str,
    page_size: usize,
) -> Response {
    let Some(commit) = repo.resolve(revision) else {
        return revision_not_found(revision);
    };
    let recursive = matches!(
        req.query_param("recursive").as_deref(),
        Some("true" | "1" | "True")
    );
    // Every directory, with the files below it (for a content-derived oid).
    let mut dirs: BTreeMap<String, Sha1> = BTreeMap::new();
    for (path, e) in &commit.files {
        let mut parts: Vec<&str> = path.split('/').collect();
        parts.pop();
        for i in 1..=parts.len() {
            dirs.entry(parts[..i].join("/"))
                .or_insert_with(Sha1::new)
                .update(format!("{path} {}\n", e.blob_oid).as_bytes());
        }
    }
    if !dir.is_empty() && !dirs.contains_key(dir) {
        return entry_not_found(dir);
    }
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let wanted = |path: &str| {
        path.strip_prefix(&prefix)
            .is_some_and(|rest| recursive || !rest.contains('/'))
    };
    let mut entries: BTreeMap<String, Value> = BTreeMap::new();
    for (path, h) in &dirs {
        if wanted(path) {
            let oid = hex(&h.clone().finish());
            entries.insert(
                path.clone(),
                json!({ "type": "directory", "oid": oid, "size": 0, "path": path }),
            );
        }
    }
    for (path, e) in &commit.files {
        if wanted(path) {
            let mut v = json!({ "type": "file", "oid": e.blob_oid, "size": e.size, "path": path });
            if e.lfs {
                v["lfs"] =
                    json!({ "oid": e.sha256, "size": e.size, "pointerSize": e.pointer_size });
            }
            entries.insert(path.clone(), v);
        }
    }
    let all: Vec<Value> = entries.into_values().collect();
    let start = req
        .query_param("cursor")
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(0)
        .min(all.len());
    let end = (start + page_size).min(all.len());
    let mut resp = Response::json(200, &Value::Array(all[start..end].to_vec()));
    if end < all.len() {
        let mut query: Vec<String> = req
            .query
            .as_deref()
            .unwrap_or("")
            .split('&')
            .filter(|kv| !kv.is_empty() && !kv.starts_with("cursor="))
            .map(str::to_string)
            .collect();
        query.push(format!("cursor={end}"));
        resp = resp.header(
            "Link",
            format!(
                "<http://127.0.0.1:{port}{}?{}>; rel=\"next\"",
                req.path,
                query.join("&")
            ),
        );
    }
    resp
}

fn resolve(state: &State, req: &Request, kind: RepoKind, segs: &[&str]) -> Response {
    let pos = segs.iter().position(|s| *s == "resolve");
    let Some(pos) = pos.filter(|&p| (1..=2).contains(&p) && segs.len() >= p + 3) else {
        return Response::error(404, None, "Not Found");
    };
    let (id, _) = split_id(state, kind, &segs[..pos]);
    let revision = percent_decode(segs[pos + 1]);
    let path: Vec<String> = segs[pos + 2..].iter().map(|s| percent_decode(s)).collect();
    let path = path.join("/");
    let repos = lock(&state.repos);
    let repo = repos.iter().find(|r| r.kind == kind && r.id == id);
    if let Err(resp) = authorize(repo, kind, &id, req, true) {
        return resp;
    }
    let repo = repo.expect("authorized repo exists");
    let Some(commit) = repo.resolve(&revision) else {
        return revision_not_found(&revision);
    };
    let Some(entry) = commit.files.get(&path) else {
        return entry_not_found(&path);
    };
    let etag = format!("\"{}\"", entry.blob_oid);
    if entry.lfs {
        let location = format!(
            "http://localhost:{}/cdn/{}?X-Amz-Expires=3600&X-Amz-Signature=fakehub&\
             response-content-disposition=attachment",
            state.port, entry.sha256
        );
        let mut r = Response::new(302)
            .header("Location", location.clone())
            .header("X-Repo-Commit", commit.sha.clone())
            .header("X-Linked-Etag", format!("\"{}\"", entry.sha256))
            .header("X-Linked-Size", entry.size.to_string())
            .header("ETag", etag)
            .header("Content-Type", "text/plain; charset=utf-8");
        r.body = Body::Data(format!("Found. Redirecting to {location}").into_bytes());
        return r;
    }
    content(req, &entry.source, entry.size)
        .header("X-Repo-Commit", commit.sha.clone())
        .header("ETag", etag)
}

fn cdn(state: &State, req: &Request, sha: &str) -> Response {
    if req.header("authorization").is_some() {
        return Response::error(
            400,
            Some("InvalidArgument"),
            "Only one auth mechanism allowed; a signed URL takes no Authorization header",
        );
    }
    let blob = lock(&state.blobs).get(sha).cloned();
    let Some(blob) = blob else {
        return Response::error(404, Some("NoSuchKey"), "The specified key does not exist.");
    };
    content(req, &blob.source, blob.size).header("ETag", format!("\"{sha}\""))
}

/// A file's content, honouring `Range: bytes=N-`, `bytes=N-M` and `bytes=-K`.
fn content(req: &Request, source: &FileSource, size: u64) -> Response {
    let range = req.header("range").and_then(|r| parse_range(r, size));
    let (status, start, len) = match range {
        None => (200, 0, size),
        Some(None) => {
            return Response::new(416)
                .header("Content-Range", format!("bytes */{size}"))
                .header("Accept-Ranges", "bytes");
        }
        Some(Some((start, end))) => (206, start, end - start + 1),
    };
    let mut r = Response::new(status)
        .header("Accept-Ranges", "bytes")
        .header("Content-Type", "application/octet-stream");
    if status == 206 {
        r = r.header(
            "Content-Range",
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    r.body = Body::Source {
        source: source.clone(),
        start,
        len,
    };
    r
}

/// `None`: no usable single range (serve everything); `Some(None)`: unsatisfiable;
/// `Some(Some((first, last)))`: the inclusive byte range.
fn parse_range(header: &str, size: u64) -> Option<Option<(u64, u64)>> {
    let spec = header.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let k: u64 = b.parse().ok()?;
        if k == 0 || size == 0 {
            return Some(None);
        }
        return Some(Some((size.saturating_sub(k), size - 1)));
    }
    let first: u64 = a.parse().ok()?;
    let last: u64 = if b.is_empty() {
        u64::MAX
    } else {
        b.parse().ok()?
    };
    if last < first {
        return None;
    }
    if first >= size {
        return Some(None);
    }
    Some(Some((first, last.min(size - 1))))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Hashes

/// The git blob id of `content` (`sha1("blob {len}\0" + content)`, what `git hash-object`
/// prints): the Hub's `ETag` for a small file and the tree's `oid`.
pub fn git_blob_oid(content: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", content.len()).as_bytes());
    h.update(content);
    hex(&h.finish())
}

/// The sha256 of `content`, in hex: the Hub's LFS oid and `X-Linked-Etag` (unquoted).
pub fn sha256_hex(content: &[u8]) -> String {
    hex(&Sha256::digest(content))
}

/// SHA-1 (FIPS 180-4), for git object ids only.
#[derive(Clone)]
struct Sha1 {
    h: [u32; 5],
    block: [u8; 64],
    filled: usize,
    len: u64,
}

impl Sha1 {
    fn new() -> Sha1 {
        Sha1 {
            h: [
                0x6745_2301,
                0xEFCD_AB89,
                0x98BA_DCFE,
                0x1032_5476,
                0xC3D2_E1F0,
            ],
            block: [0; 64],
            filled: 0,
            len: 0,
        }
    }

    fn digest(data: &[u8]) -> [u8; 20] {
        let mut h = Sha1::new();
        h.update(data);
        h.finish()
    }

    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        while !data.is_empty() {
            let take = (64 - self.filled).min(data.len());
            self.block[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled == 64 {
                let block = self.block;
                self.compress(&block);
                self.filled = 0;
            }
        }
    }

    fn compress(&mut self, block: &[u8; 64]) {
        let mut w = [0u32; 80];
        for (i, chunk) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = self.h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (h, v) in self.h.iter_mut().zip([a, b, c, d, e]) {
            *h = h.wrapping_add(v);
        }
    }

    fn finish(mut self) -> [u8; 20] {
        let bits = self.len.wrapping_mul(8);
        self.update(&[0x80]);
        while self.filled != 56 {
            self.update(&[0]);
        }
        self.update(&bits.to_be_bytes());
        let mut out = [0u8; 20];
        for (chunk, h) in out.chunks_exact_mut(4).zip(self.h) {
            chunk.copy_from_slice(&h.to_be_bytes());
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// YAML front matter (the block subset model and dataset cards use)

/// The README's YAML front matter as JSON, for the subset cards use: block maps and sequences,
/// plain, quoted and flow-list scalars, `|`/`>` blocks. `None` when there is none or it is not
/// understood.
pub fn front_matter(readme: &str) -> Option<Value> {
    let mut lines = readme.lines();
    if lines.next()?.trim_end() != "---" {
        return None;
    }
    let mut body = Vec::new();
    let mut closed = false;
    for line in lines {
        if line.trim_end() == "---" {
            closed = true;
            break;
        }
        body.push(line);
    }
    if !closed {
        return None;
    }
    let mut toks: Vec<(usize, String)> = body
        .iter()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| {
            (
                l.len() - l.trim_start_matches(' ').len(),
                l.trim().to_string(),
            )
        })
        .collect();
    if toks.is_empty() {
        return Some(Value::Object(Map::new()));
    }
    let mut pos = 0;
    let indent = toks[0].0;
    let v = yaml_node(&mut toks, &mut pos, indent)?;
    (pos == toks.len()).then_some(v)
}

fn yaml_is_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

fn yaml_node(t: &mut Vec<(usize, String)>, pos: &mut usize, indent: usize) -> Option<Value> {
    let (ind, text) = t.get(*pos)?.clone();
    if ind != indent {
        return None;
    }
    if yaml_is_item(&text) {
        yaml_seq(t, pos, indent)
    } else if yaml_key(&text).is_some() {
        yaml_map(t, pos, indent)
    } else {
        *pos += 1;
        Some(yaml_scalar(&text))
    }
}

fn yaml_seq(t: &mut Vec<(usize, String)>, pos: &mut usize, indent: usize) -> Option<Value> {
    let mut items = Vec::new();
    while *pos < t.len() && t[*pos].0 == indent && yaml_is_item(&t[*pos].1) {
        let text = t[*pos].1.clone();
        let rest = text[1..].trim_start();
        if rest.is_empty() {
            *pos += 1;
            match t.get(*pos) {
                Some(&(next, _)) if next > indent => items.push(yaml_node(t, pos, next)?),
                _ => items.push(Value::Null),
            }
        } else {
            let col = indent + (text.len() - rest.len());
            t[*pos] = (col, rest.to_string());
            items.push(yaml_node(t, pos, col)?);
        }
    }
    Some(Value::Array(items))
}

fn yaml_map(t: &mut Vec<(usize, String)>, pos: &mut usize, indent: usize) -> Option<Value> {
    let mut map = Map::new();
    while *pos < t.len() && t[*pos].0 == indent && !yaml_is_item(&t[*pos].1) {
        let (key, value) = yaml_key(&t[*pos].1)?;
        *pos += 1;
        let value = if value.starts_with('|') || value.starts_with('>') {
            let sep = if value.starts_with('|') { "\n" } else { " " };
            let mut parts = Vec::new();
            while *pos < t.len() && t[*pos].0 > indent {
                parts.push(t[*pos].1.clone());
                *pos += 1;
            }
            Value::String(parts.join(sep))
        } else if !value.is_empty() {
            yaml_scalar(&value)
        } else {
            match t.get(*pos) {
                Some(&(next, _)) if next > indent => yaml_node(t, pos, next)?,
                Some((next, text)) if *next == indent && yaml_is_item(text) => {
                    yaml_seq(t, pos, indent)?
                }
                _ => Value::Null,
            }
        };
        map.insert(key, value);
    }
    Some(Value::Object(map))
}

/// `key: value` or `key:` → (key, value); `None` when the text is not a mapping entry.
fn yaml_key(text: &str) -> Option<(String, String)> {
    if let Some(q) = text.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let close = text[1..].find(q)? + 1;
        let rest = text[close + 1..].trim_start();
        let value = rest.strip_prefix(':')?;
        if !value.is_empty() && !value.starts_with(' ') {
            return None;
        }
        return Some((text[1..close].to_string(), value.trim().to_string()));
    }
    if text.starts_with(['[', '{']) {
        return None;
    }
    let (key, value) = match text.find(": ") {
        Some(i) => (&text[..i], &text[i + 2..]),
        None => (text.strip_suffix(':')?, ""),
    };
    Some((key.trim().to_string(), value.trim().to_string()))
}

fn yaml_scalar(text: &str) -> Value {
    let text = text.trim();
    if let Some(q) = text.chars().next().filter(|c| *c == '"' || *c == '\'')
        && let Some(end) = text[1..].rfind(q)
    {
        let inner = &text[1..end + 1];
        return Value::String(if q == '\'' {
            inner.replace("''", "'")
        } else {
            inner.replace("\\\"", "\"").replace("\\\\", "\\")
        });
    }
    let text = match text.find(" #") {
        Some(i) => text[..i].trim_end(),
        None => text,
    };
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return Value::Array(
            inner
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(yaml_scalar)
                .collect(),
        );
    }
    if text == "{}" {
        return Value::Object(Map::new());
    }
    match text {
        "true" | "True" => return Value::Bool(true),
        "false" | "False" => return Value::Bool(false),
        "null" | "~" | "" => return Value::Null,
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>() {
        return json!(i);
    }
    if text.contains('.')
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
        && let Ok(f) = text.parse::<f64>()
    {
        return json!(f);
    }
    Value::String(text.to_string())
}
