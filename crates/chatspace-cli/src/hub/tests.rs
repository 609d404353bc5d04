//! The client against tiny in-test HTTP servers (one for the Hub, one for the file host):
//! listings, refs, downloads, resume, redirects without the token, errors and retries.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::*;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "hf_test_token_123";

/// A request as the server saw it (header names lowercased).
#[derive(Debug, Clone)]
struct Req {
    path: String,
    headers: HashMap<String, String>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// An answer; `cut_after` sends only that many body bytes, then closes.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    cut_after: Option<usize>,
}

impl Reply {
    fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
            cut_after: None,
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

type Handler = dyn Fn(&Req, usize) -> Reply + Send + Sync;

/// A server on 127.0.0.1 answering with `handler(request, index of the request)`.
struct Server {
    base: String,
    log: Arc<Mutex<Vec<Req>>>,
}

impl Server {
    fn start(handler: impl Fn(&Req, usize) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let thread_log = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (log, handler) = (thread_log.clone(), handler.clone());
                std::thread::spawn(move || answer(stream, &log, &*handler));
            }
        });
        Server { base, log }
    }

    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }
}

fn answer(stream: TcpStream, log: &Mutex<Vec<Req>>, handler: &Handler) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let req = Req { path, headers };
    let index = {
        let mut log = log.lock().unwrap();
        log.push(req.clone());
        log.len() - 1
    };
    let reply = handler(&req, index);
    let mut out = stream;
    let mut head = format!("HTTP/1.1 {} X\r\n", reply.status);
    if !reply
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    let body = &reply.body[..reply.cut_after.unwrap_or(reply.body.len())];
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(body);
    let _ = out.flush();
    let _ = out.shutdown(std::net::Shutdown::Both);
}

fn config(base: &str, home: &Path, token: Option<&str>) -> HubConfig {
    let mut cfg = HubConfig::new(base, home).with_token(token.map(str::to_string));
    cfg.retry = RetryPolicy {
        tries: 3,
        first_delay: Duration::from_millis(1),
    };
    cfg.read_timeout = Duration::from_secs(10);
    cfg
}

fn dataset() -> RepoRef {
    RepoRef::new(RepoKind::Dataset, "org/name")
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn listing_json(files: &[&str]) -> String {
    let siblings: Vec<_> = files
        .iter()
        .map(|f| serde_json::json!({ "rfilename": f }))
        .collect();
    serde_json::json!({ "id": "org/name", "sha": COMMIT, "siblings": siblings }).to_string()
}

#[test]
fn snapshot_records_refs_and_listing_and_then_works_offline() {
    let hub_server = Server::start(|req, _| {
        if req.path == "/api/datasets/org/name/revision/refs%2Fconvert%2Fparquet" {
            Reply::new(
                200,
                listing_json(&["b.parquet", "README.md", "a/x.parquet"]),
            )
        } else {
            Reply::new(404, "{}").header("X-Error-Code", "RepoNotFound")
        }
    });
    let home = tempfile::tempdir().unwrap();
    let cfg = config(&hub_server.base, home.path(), Some(TOKEN));
    let hub = Hub::new(cfg.clone());
    let repo = dataset().at("refs/convert/parquet");
    let snap = hub.snapshot(&repo).unwrap();
    assert_eq!(snap.commit, COMMIT);
    assert_eq!(snap.files, ["README.md", "a/x.parquet", "b.parquet"]);
    assert_eq!(
        snap.dir(),
        home.path()
            .join("hub/datasets--org--name/snapshots")
            .join(COMMIT)
    );
    let reqs = hub_server.requests();
    assert_eq!(reqs.len(), 1);
    let auth = format!("Bearer {TOKEN}");
    assert_eq!(reqs[0].header("authorization"), Some(auth.as_str()));
    let ref_file = home
        .path()
        .join("hub/datasets--org--name/refs/refs/convert/parquet");
    assert_eq!(std::fs::read_to_string(ref_file).unwrap(), COMMIT);
    assert!(
        home.path()
            .join("chatspace/listings/datasets--org--name")
            .join(format!("{COMMIT}.json"))
            .is_file()
    );

    // Offline: the ref and the recorded listing answer, without a request.
    let mut offline = cfg.clone();
    offline.offline = true;
    let offline_hub = Hub::new(offline);
    assert_eq!(offline_hub.snapshot(&repo).unwrap(), snap);
    // A revision never fetched is not in the cache.
    let err = offline_hub.snapshot(&dataset()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "HF_HUB_OFFLINE is set and dataset org/name (revision main) is not in the cache at {}",
            home.path().join("hub/datasets--org--name").display()
        )
    );
    assert!(err.is_bad_input());
    let err = offline_hub.download(&snap, "a/x.parquet").unwrap_err();
    assert!(
        err.to_string().starts_with(
            "HF_HUB_OFFLINE is set and file a/x.parquet of dataset org/name (revision refs/convert/parquet) is not in the cache at "
        ),
        "{err}"
    );
    // A commit that is already listed needs no request online either.
    hub.snapshot(&dataset().at(COMMIT)).unwrap();
    assert_eq!(hub_server.requests().len(), 1);
    // Without a listing, offline takes the files in the snapshot folder.
    std::fs::remove_dir_all(home.path().join("chatspace")).unwrap();
    std::fs::create_dir_all(snap.dir().join("a")).unwrap();
    std::fs::write(snap.dir().join("a/x.parquet"), b"x").unwrap();
    assert_eq!(offline_hub.snapshot(&repo).unwrap().files, ["a/x.parquet"]);
    assert_eq!(hub_server.requests().len(), 1);
}

#[cfg(unix)]
#[test]
fn download_resumes_and_keeps_the_token_off_the_file_host() {
    let content: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let sha = sha256_hex(&content);
    let cdn_content = content.clone();
    let cdn = Server::start(move |req, _| {
        let from: usize = req
            .header("range")
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.trim_end_matches('-').parse().ok())
            .unwrap_or(0);
        let total = cdn_content.len();
        if from == 0 {
            Reply::new(200, cdn_content.clone())
        } else {
            Reply::new(206, cdn_content[from..].to_vec()).header(
                "Content-Range",
                format!("bytes {from}-{}/{total}", total - 1),
            )
        }
    });
    let cdn_base = cdn.base.clone();
    let (size, sha_for_hub) = (content.len(), sha.clone());
    let hub_server = Server::start(move |req, _| {
        let lfs = format!("/datasets/org/name/resolve/{COMMIT}/data/train%20set.parquet");
        let small = format!("/datasets/org/name/resolve/{COMMIT}/README.md");
        if req.path == lfs {
            Reply::new(302, "")
                .header("Location", format!("{cdn_base}/blob?sig=abc"))
                .header("X-Repo-Commit", COMMIT)
                .header("X-Linked-Etag", format!("\"{sha_for_hub}\""))
                .header("X-Linked-Size", size.to_string())
        } else if req.path == small {
            Reply::new(200, "# card\n")
                .header("ETag", "\"1111111111111111111111111111111111111111\"")
                .header("X-Repo-Commit", COMMIT)
        } else {
            Reply::new(404, "").header("X-Error-Code", "EntryNotFound")
        }
    });
    let home = tempfile::tempdir().unwrap();
    let hub = Hub::new(config(&hub_server.base, home.path(), Some(TOKEN)));
    let snap = commit_snapshot(home.path(), &hub_server.base);
    let api_requests = hub_server.requests().len();

    // A previous run left the first 20,000 bytes.
    let repo_dir = home.path().join("hub/datasets--org--name");
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    std::fs::write(
        repo_dir.join(format!("blobs/{sha}.incomplete")),
        &content[..20_000],
    )
    .unwrap();

    let path = hub.download(&snap, "data/train set.parquet").unwrap();
    assert_eq!(path, snap.dir().join("data/train set.parquet"));
    assert_eq!(std::fs::read(&path).unwrap(), content);
    assert_eq!(
        std::fs::read_link(&path).unwrap(),
        Path::new("../../../blobs").join(&sha)
    );
    assert!(!repo_dir.join(format!("blobs/{sha}.incomplete")).exists());
    assert!(
        home.path()
            .join("hub/.locks/datasets--org--name")
            .join(format!("{sha}.lock"))
            .exists()
    );

    let hub_reqs = &hub_server.requests()[api_requests..];
    assert_eq!(hub_reqs.len(), 1);
    let auth = format!("Bearer {TOKEN}");
    assert_eq!(hub_reqs[0].header("authorization"), Some(auth.as_str()));
    assert_eq!(hub_reqs[0].header("accept-encoding"), Some("identity"));
    let cdn_reqs = cdn.requests();
    assert_eq!(cdn_reqs.len(), 1);
    assert_eq!(cdn_reqs[0].path, "/blob?sig=abc");
    assert_eq!(cdn_reqs[0].header("authorization"), None);
    assert_eq!(cdn_reqs[0].header("range"), Some("bytes=20000-"));

    // A small file comes straight from the Hub.
    let readme = hub.download(&snap, "README.md").unwrap();
    assert_eq!(std::fs::read_to_string(&readme).unwrap(), "# card\n");
    assert_eq!(
        std::fs::read_link(&readme).unwrap(),
        Path::new("../../blobs/1111111111111111111111111111111111111111")
    );

    // Cached now: no more requests.
    let before = (hub_server.requests().len(), cdn.requests().len());
    hub.download(&snap, "data/train set.parquet").unwrap();
    hub.download(&snap, "README.md").unwrap();
    assert_eq!(before, (hub_server.requests().len(), cdn.requests().len()));

    // A file the repository does not have.
    let err = hub.download(&snap, "nope.txt").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("file nope.txt not found in dataset org/name at revision {COMMIT}")
    );
    assert!(err.is_bad_input());
    let err = hub.download(&snap, "../escape").unwrap_err();
    assert!(matches!(err, HubError::InvalidPath { .. }), "{err}");
}

/// A snapshot of a commit without asking the API (the tiny servers have none).
fn commit_snapshot(home: &Path, base: &str) -> Snapshot {
    let mut cfg = config(base, home, None);
    cfg.offline = true;
    let dir = home.join("hub/datasets--org--name/snapshots").join(COMMIT);
    std::fs::create_dir_all(dir).unwrap();
    Hub::new(cfg).snapshot(&dataset().at(COMMIT)).unwrap()
}

#[test]
fn a_cut_connection_is_resumed_and_a_bad_hash_is_refused() {
    let content: Vec<u8> = (0..30_000u32).map(|i| (i % 13) as u8).collect();
    let sha = sha256_hex(&content);
    let body = content.clone();
    let cdn = Server::start(move |req, index| {
        if req.path == "/bad" {
            return Reply::new(200, vec![7u8; body.len()]);
        }
        match req.header("range") {
            // The first answer announces everything and stops half way.
            None if index == 0 => {
                let mut r = Reply::new(200, body.clone());
                r.cut_after = Some(12_345);
                r
            }
            None => Reply::new(200, body.clone()),
            Some(range) => {
                let from: usize = range[6..range.len() - 1].parse().unwrap();
                Reply::new(206, body[from..].to_vec()).header(
                    "Content-Range",
                    format!("bytes {from}-{}/{}", body.len() - 1, body.len()),
                )
            }
        }
    });
    let cdn_base = cdn.base.clone();
    let (size, sha_hub) = (content.len(), sha.clone());
    let hub_server = Server::start(move |req, _| {
        let target = if req.path.ends_with("/bad.parquet") {
            "/bad"
        } else {
            "/good"
        };
        Reply::new(302, "")
            .header("Location", format!("{cdn_base}{target}"))
            .header("X-Linked-Etag", format!("\"{sha_hub}\""))
            .header("X-Linked-Size", size.to_string())
    });
    let home = tempfile::tempdir().unwrap();
    let snap = commit_snapshot(home.path(), &hub_server.base);
    let hub = Hub::new(config(&hub_server.base, home.path(), None));
    let path = hub.download(&snap, "good.parquet").unwrap();
    assert_eq!(std::fs::read(path).unwrap(), content);
    let reqs = cdn.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[1].header("range"), Some("bytes=12345-"));

    // Same size, wrong bytes: refused, nothing left behind under any name.
    std::fs::remove_dir_all(home.path().join("hub/datasets--org--name/blobs")).unwrap();
    let err = hub.download(&snap, "bad.parquet").unwrap_err();
    assert!(matches!(err, HubError::Corrupt { .. }), "{err}");
    assert!(!err.is_bad_input());
    let blobs: Vec<_> = std::fs::read_dir(home.path().join("hub/datasets--org--name/blobs"))
        .unwrap()
        .collect();
    assert!(blobs.is_empty(), "{blobs:?}");
    assert!(!snap.local_path("bad.parquet").exists());
}

#[test]
fn hub_errors_become_one_clear_line() {
    let hub_server = Server::start(|req, _| {
        let p = req.path.as_str();
        let (status, code) = if p.contains("/missing/") {
            (
                if req.headers.contains_key("authorization") {
                    404
                } else {
                    401
                },
                "RepoNotFound",
            )
        } else if p.contains("/gated/") {
            (403, "GatedRepo")
        } else if p.contains("/private/") {
            (401, "")
        } else if p.contains("/revision/nope") {
            (404, "RevisionNotFound")
        } else {
            (400, "")
        };
        let mut r = Reply::new(status, r#"{"error": "Something\nwent wrong"}"#);
        if !code.is_empty() {
            r = r.header("X-Error-Code", code);
        }
        r
    });
    let home = tempfile::tempdir().unwrap();
    let anonymous = Hub::new(config(&hub_server.base, home.path(), None));
    let with_token = Hub::new(config(&hub_server.base, home.path(), Some(TOKEN)));
    let base = &hub_server.base;
    let err_of = |hub: &Hub, kind, id: &str, rev: &str| {
        hub.snapshot(&RepoRef::new(kind, id).at(rev)).unwrap_err()
    };

    let e = err_of(&anonymous, RepoKind::Dataset, "org/missing", "main");
    assert_eq!(
        e.to_string(),
        format!("dataset org/missing not found on {base}; if it is private, set HF_TOKEN")
    );
    assert!(e.is_bad_input());
    let e = err_of(&with_token, RepoKind::Dataset, "org/missing", "main");
    assert_eq!(
        e.to_string(),
        format!("dataset org/missing not found on {base}")
    );

    let e = err_of(&anonymous, RepoKind::Model, "org/gated", "main");
    assert_eq!(
        e.to_string(),
        format!(
            "access to model org/gated was refused (403): it is gated or private; set HF_TOKEN to a token that has access (no token was sent; request access at {base}/org/gated)"
        )
    );
    assert!(e.is_bad_input());
    let e = err_of(&with_token, RepoKind::Dataset, "org/private", "main");
    assert_eq!(
        e.to_string(),
        "access to dataset org/private was refused (401): it is gated or private; set HF_TOKEN to a token that has access (a token was sent)"
    );
    assert!(!e.to_string().contains(TOKEN));

    let e = err_of(&anonymous, RepoKind::Dataset, "org/name", "nope");
    assert_eq!(e.to_string(), "revision nope not found in dataset org/name");
    assert!(e.is_bad_input());

    let e = err_of(&anonymous, RepoKind::Dataset, "org/other", "main");
    assert_eq!(
        e.to_string(),
        format!(
            "GET {base}/api/datasets/org/other/revision/main answered HTTP 400: Something went wrong"
        )
    );
    // No error message ever carries the token.
    assert!(!format!("{e:?}").contains(TOKEN));
}

#[test]
fn passing_failures_are_retried_then_reported() {
    // Two 503s, then the answer.
    let flaky = Server::start(|_, index| {
        if index < 2 {
            Reply::new(503, "busy")
        } else {
            Reply::new(200, listing_json(&["a.json"]))
        }
    });
    let home = tempfile::tempdir().unwrap();
    let hub = Hub::new(config(&flaky.base, home.path(), None));
    assert_eq!(hub.snapshot(&dataset()).unwrap().files, ["a.json"]);
    assert_eq!(flaky.requests().len(), 3);

    // Always 503: three tries, then one line naming the URL and the cause.
    let down = Server::start(|_, _| Reply::new(503, "down"));
    let other_home = tempfile::tempdir().unwrap();
    let hub = Hub::new(config(&down.base, other_home.path(), None));
    let err = hub.snapshot(&dataset()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot reach {0} (HTTP 503 Service Unavailable) after 3 tries (GET {0}/api/datasets/org/name/revision/main)",
            down.base
        )
    );
    assert!(!err.is_bad_input());
    assert_eq!(down.requests().len(), 3);

    // Nobody listening.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let hub = Hub::new(config(&base, other_home.path(), None));
    let err = hub.snapshot(&dataset()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("cannot reach {base} (")) && text.contains("after 3 tries"),
        "{text}"
    );

    // Unreachable, but the revision is in the cache: it is used.
    let hub = Hub::new(config(&base, home.path(), None));
    assert_eq!(hub.snapshot(&dataset()).unwrap().commit, COMMIT);
}

#[test]
fn the_client_is_shared_across_threads_and_downloads_each_blob_once() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Hub>();
    assert!(looks_like_repo_id("HuggingFaceTB/smoltalk"));

    let content = vec![42u8; 200_000];
    let sha = sha256_hex(&content);
    let cdn = Server::start(move |_, _| Reply::new(200, content.clone()));
    let cdn_base = cdn.base.clone();
    let hub_server = Server::start(move |_, _| {
        Reply::new(302, "")
            .header("Location", format!("{cdn_base}/x"))
            .header("X-Linked-Etag", format!("\"{sha}\""))
            .header("X-Linked-Size", "200000")
    });
    let home = tempfile::tempdir().unwrap();
    let snap = commit_snapshot(home.path(), &hub_server.base);
    let hub = Hub::new(config(&hub_server.base, home.path(), None));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (hub, snap) = (hub.clone(), snap.clone());
            std::thread::spawn(move || {
                // Two paths with the same content share one blob.
                let path = if i % 2 == 0 {
                    "a/x.parquet"
                } else {
                    "b.parquet"
                };
                hub.download(&snap, path).unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(std::fs::read(t.join().unwrap()).unwrap().len(), 200_000);
    }
    assert_eq!(cdn.requests().len(), 1);
}

#[test]
fn an_answer_without_siblings_is_listed_through_the_tree_api() {
    let hub_server = Server::start(|req, _| {
        let tree = format!("/api/datasets/org/name/tree/{COMMIT}?recursive=true");
        if req.path == "/api/datasets/org/name/revision/main" {
            Reply::new(200, serde_json::json!({ "sha": COMMIT }).to_string())
        } else if req.path == tree {
            let page = serde_json::json!([
                { "type": "directory", "path": "data" },
                { "type": "file", "path": "data/a.parquet" },
            ]);
            Reply::new(200, page.to_string())
                .header("Link", format!("<{tree}&cursor=2>; rel=\"next\""))
        } else if req.path == format!("{tree}&cursor=2") {
            let page = serde_json::json!([{ "type": "file", "path": "README.md" }]);
            Reply::new(200, page.to_string())
        } else {
            Reply::new(404, "")
        }
    });
    let home = tempfile::tempdir().unwrap();
    let hub = Hub::new(config(&hub_server.base, home.path(), Some(TOKEN)));
    let snap = hub.snapshot(&dataset()).unwrap();
    assert_eq!(snap.files, ["README.md", "data/a.parquet"]);
    let reqs = hub_server.requests();
    assert_eq!(reqs.len(), 3);
    assert!(reqs.iter().all(|r| r.header("authorization").is_some()));
}
