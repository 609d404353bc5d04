//! The fake Hugging Face Hub on its own, driven by a small std-only HTTP client: repository info,
//! tree listings, `resolve` (200 + ETag for small files, 302 to the CDN host for LFS files),
//! ranges, error codes, injected failures and cuts, `stop`, and the dataset builders' Parquet
//! files read back with pyarrow.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use chatspace_tests::fakehub::{
    FakeHub, FakeRepo, FileSource, PARQUET_CONVERTED_ROWS, PARQUET_REVISION, RepoKind,
    SMOLTALK_LIKE_SPLITS, front_matter, git_blob_oid, sha256_hex,
};
use chatspace_tests::{model, python, run_ok};
use serde_json::Value;

/// A response as the test client read it.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }

    fn error_code(&self) -> Option<&str> {
        self.header("x-error-code")
    }
}

/// One HTTP/1.1 request on a fresh connection, read until the server closes it.
fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Resp {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = TcpStream::connect(authority).unwrap_or_else(|e| panic!("{url}: {e}"));
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 1 << 16];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn get(url: &str) -> Resp {
    request("GET", url, &[])
}

fn get_auth(url: &str, token: &str) -> Resp {
    request("GET", url, &[("Authorization", &format!("Bearer {token}"))])
}

/// GETs `url` (with `token` if any); on a 302, GETs the `Location` without the token, as a
/// client must when the host changes.
fn download(url: &str, token: Option<&str>) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let first = request("GET", url, &headers);
    if first.status != 302 {
        return first;
    }
    get(first.header("location").expect("302 has a Location"))
}

fn is_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn minilm_hub() -> FakeHub {
    FakeHub::start(vec![FakeRepo::minilm_model(
        "sentence-transformers/all-MiniLM-L6-v2",
    )])
}

const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";

#[test]
fn git_blob_oid_matches_git() {
    assert_eq!(
        git_blob_oid(b""),
        "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    );
    assert_eq!(
        git_blob_oid(b"hello\n"),
        "ce013625030ba8dba906f756967f9e9ca394464a"
    );
    // Longer than one block, and against git itself where it is installed.
    let file = model("all-MiniLM-L6-v2").join("config.json");
    let content = std::fs::read(&file).unwrap();
    if let Ok(out) = std::process::Command::new("git")
        .arg("hash-object")
        .arg(&file)
        .output()
        && out.status.success()
    {
        assert_eq!(
            git_blob_oid(&content),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
}

#[test]
fn front_matter_parses_card_yaml() {
    let card = front_matter(
        "---\nlicense: mit\ntags:\n- a\n- 'b c'\nn: 3\nflow: [x, \"y\"]\nconfigs:\n- config_name: all\n  data_files:\n  - split: train\n    path: data/all/train-*\n  default: true\n---\nbody\n",
    )
    .expect("front matter");
    assert_eq!(card["license"], "mit");
    assert_eq!(card["tags"], serde_json::json!(["a", "b c"]));
    assert_eq!(card["n"], 3);
    assert_eq!(card["flow"], serde_json::json!(["x", "y"]));
    assert_eq!(card["configs"][0]["config_name"], "all");
    assert_eq!(card["configs"][0]["default"], true);
    assert_eq!(
        card["configs"][0]["data_files"][0]["path"],
        "data/all/train-*"
    );
    assert!(front_matter("# no front matter\n").is_none());
}

#[test]
fn model_info_json_and_revisions() {
    let hub = minilm_hub();
    let base = hub.endpoint();
    assert!(base.starts_with("http://127.0.0.1:"));

    let info = get(&format!("{base}/api/models/{MINILM}"));
    assert_eq!(info.status, 200);
    let v = info.json();
    assert_eq!(v["id"], MINILM);
    assert_eq!(v["modelId"], MINILM);
    assert_eq!(v["private"], false);
    assert_eq!(v["gated"], false);
    assert_eq!(v["cardData"]["library_name"], "sentence-transformers");
    let sha = v["sha"].as_str().unwrap().to_string();
    assert!(is_sha(&sha), "{sha}");
    assert_eq!(v["_id"].as_str().unwrap().len(), 24);
    let files: Vec<&str> = v["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rfilename"].as_str().unwrap())
        .collect();
    for f in [
        "README.md",
        ".gitattributes",
        "onnx/model.onnx",
        "1_Pooling/config.json",
        "tokenizer.json",
        "modules.json",
        "sentence_bert_config.json",
    ] {
        assert!(files.contains(&f), "{f} missing from {files:?}");
    }
    assert_eq!(
        hub.commit(RepoKind::Model, MINILM, "main").as_deref(),
        Some(sha.as_str())
    );

    // By branch, by commit sha, and ?blobs=true.
    for rev in ["main", sha.as_str()] {
        let r = get(&format!(
            "{base}/api/models/{MINILM}/revision/{rev}?blobs=true"
        ));
        assert_eq!(r.status, 200, "{rev}");
        let v = r.json();
        assert_eq!(v["sha"], sha.as_str());
        let onnx = v["siblings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["rfilename"] == "onnx/model.onnx")
            .unwrap();
        assert_eq!(onnx["lfs"]["size"], 90386675);
        assert_eq!(onnx["lfs"]["sha256"].as_str().unwrap().len(), 64);
    }

    let missing = get(&format!("{base}/api/models/{MINILM}/revision/v9.9"));
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error_code(), Some("RevisionNotFound"));
    assert!(missing.json()["error"].is_string());
}

#[test]
fn tags_branches_and_pushes_move_commits() {
    let repo = FakeRepo::model("org/tiny")
        .with_file("config.json", FileSource::bytes("{\"a\": 1}\n"))
        .with_tag("v1.0", "main")
        .with_branch("feature/x", "main")
        .with_file_at("feature/x", "extra.txt", FileSource::bytes("x"));
    let hub = FakeHub::start(vec![repo]);
    let base = hub.endpoint();
    let main = hub.commit(RepoKind::Model, "org/tiny", "main").unwrap();
    let tag = get(&format!("{base}/api/models/org/tiny/revision/v1.0")).json();
    assert_eq!(tag["sha"], main.as_str());
    let branch = get(&format!("{base}/api/models/org/tiny/revision/feature%2Fx")).json();
    assert_ne!(branch["sha"], main.as_str());
    assert_eq!(branch["siblings"].as_array().unwrap().len(), 2);

    let new = hub.put_file(
        RepoKind::Model,
        "org/tiny",
        "main",
        "config.json",
        Some(FileSource::bytes("{\"a\": 2}\n")),
    );
    assert_ne!(new, main);
    let now = get(&format!("{base}/org/tiny/resolve/main/config.json"));
    assert_eq!(now.body, b"{\"a\": 2}\n");
    assert_eq!(now.header("x-repo-commit"), Some(new.as_str()));
    // The old commit (and the tag on it) still serve the old content.
    let old = get(&format!("{base}/org/tiny/resolve/{main}/config.json"));
    assert_eq!(old.body, b"{\"a\": 1}\n");
    let tagged = get(&format!("{base}/org/tiny/resolve/v1.0/config.json"));
    assert_eq!(tagged.header("x-repo-commit"), Some(main.as_str()));
}

#[test]
fn small_file_answers_200_with_git_etag() {
    let hub = minilm_hub();
    let base = hub.endpoint();
    let sha = hub.commit(RepoKind::Model, MINILM, "main").unwrap();
    let local = std::fs::read(model("all-MiniLM-L6-v2").join("1_Pooling/config.json")).unwrap();
    let url = format!("{base}/{MINILM}/resolve/main/1_Pooling/config.json");

    let head = request("HEAD", &url, &[]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("etag"),
        Some(format!("\"{}\"", git_blob_oid(&local)).as_str())
    );
    assert_eq!(head.header("x-repo-commit"), Some(sha.as_str()));
    assert_eq!(
        head.header("content-length"),
        Some(local.len().to_string().as_str())
    );

    let body = get(&url);
    assert_eq!(body.status, 200);
    assert_eq!(body.body, local);
    assert_eq!(body.header("etag"), head.header("etag"));

    // An encoded path works as well.
    let encoded = get(&format!(
        "{base}/{MINILM}/resolve/main/1_Pooling%2Fconfig.json"
    ));
    assert_eq!(encoded.body, local);

    let missing = get(&format!("{base}/{MINILM}/resolve/main/nope.json"));
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error_code(), Some("EntryNotFound"));
    let bad_rev = get(&format!("{base}/{MINILM}/resolve/nobranch/config.json"));
    assert_eq!(bad_rev.status, 404);
    assert_eq!(bad_rev.error_code(), Some("RevisionNotFound"));
}

#[test]
fn lfs_file_redirects_to_the_localhost_cdn() {
    let hub = minilm_hub();
    let base = hub.endpoint();
    let sha = hub.commit(RepoKind::Model, MINILM, "main").unwrap();
    let url = format!("{base}/{MINILM}/resolve/main/onnx/model.onnx");
    let head = request("HEAD", &url, &[]);
    assert_eq!(head.status, 302);
    assert_eq!(head.header("x-repo-commit"), Some(sha.as_str()));
    assert_eq!(head.header("x-linked-size"), Some("90386675"));
    let linked = head.header("x-linked-etag").unwrap().trim_matches('"');
    assert_eq!(linked.len(), 64);
    assert!(head.header("etag").is_some());
    let location = head.header("location").unwrap();
    let cdn_prefix = format!("http://localhost:{}/cdn/{linked}?", hub.port());
    assert!(location.starts_with(&cdn_prefix), "{location}");

    // The CDN: whole-file HEAD, and ranges on GET.
    let cdn_head = request("HEAD", location, &[]);
    assert_eq!(cdn_head.status, 200);
    assert_eq!(cdn_head.header("content-length"), Some("90386675"));
    assert_eq!(cdn_head.header("accept-ranges"), Some("bytes"));
    let local = std::fs::read(model("all-MiniLM-L6-v2").join("onnx/model.onnx")).unwrap();
    let tail = request("GET", location, &[("Range", "bytes=90000000-")]);
    assert_eq!(tail.status, 206);
    assert_eq!(
        tail.header("content-range"),
        Some("bytes 90000000-90386674/90386675")
    );
    assert_eq!(tail.body, &local[90_000_000..]);
    let mid = request("GET", location, &[("Range", "bytes=100-199")]);
    assert_eq!(mid.status, 206);
    assert_eq!(mid.header("content-range"), Some("bytes 100-199/90386675"));
    assert_eq!(mid.body, &local[100..200]);
    let past = request("GET", location, &[("Range", "bytes=90386675-")]);
    assert_eq!(past.status, 416);
    assert_eq!(past.header("content-range"), Some("bytes */90386675"));

    // The log: the CDN requests went to localhost, without a token.
    let cdn = hub.requests_matching("/cdn/");
    assert_eq!(cdn.len(), 4);
    assert!(cdn.iter().all(|r| !r.had_authorization));
    assert!(
        cdn.iter()
            .all(|r| r.host.as_deref().unwrap().starts_with("localhost:"))
    );
    assert_eq!(cdn[1].range.as_deref(), Some("bytes=90000000-"));
    assert_eq!(cdn[1].bytes_sent, 386675);
    assert_eq!(hub.cdn_auth_violations(), 0);

    // A token sent to the CDN is a violation, and is refused.
    let leaked = get_auth(location, "hf_secret");
    assert_eq!(leaked.status, 400);
    assert_eq!(hub.cdn_auth_violations(), 1);
}

#[test]
fn lfs_download_matches_its_sha256() {
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let repo = FakeRepo::model("org/weights")
        .with_file("model.safetensors", FileSource::bytes(big.clone()))
        .with_file("notes.txt", FileSource::bytes("hi"));
    let hub = FakeHub::start(vec![repo]);
    let got = download(
        &format!(
            "{}/org/weights/resolve/main/model.safetensors",
            hub.endpoint()
        ),
        Some("hf_token"),
    );
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), big.len());
    assert_eq!(sha256_hex(&got.body), sha256_hex(&big));
    assert_eq!(
        got.header("etag"),
        Some(format!("\"{}\"", sha256_hex(&big)).as_str())
    );
    // The token went to the repository host only.
    assert_eq!(hub.cdn_auth_violations(), 0);
    let log = hub.requests();
    assert_eq!(log.len(), 2);
    assert!(log[0].had_authorization && log[0].status == 302);
    assert!(!log[1].had_authorization && log[1].status == 200);
    assert_eq!(log[1].bytes_sent, big.len() as u64);
}

#[test]
fn tree_lists_files_directories_and_pages() {
    let hub = minilm_hub();
    let base = hub.endpoint();
    let rec = get(&format!(
        "{base}/api/models/{MINILM}/tree/main?recursive=true"
    ));
    assert_eq!(rec.status, 200);
    let entries = rec.json();
    let entries = entries.as_array().unwrap();
    let find = |p: &str| entries.iter().find(|e| e["path"] == p).cloned();
    let onnx = find("onnx/model.onnx").expect("onnx listed");
    assert_eq!(onnx["type"], "file");
    assert_eq!(onnx["size"], 90386675);
    assert_eq!(onnx["lfs"]["size"], 90386675);
    assert_eq!(onnx["lfs"]["oid"].as_str().unwrap().len(), 64);
    assert_eq!(onnx["oid"].as_str().unwrap().len(), 40);
    let dir = find("onnx").expect("directory listed");
    assert_eq!(dir["type"], "directory");
    let cfg = find("config.json").unwrap();
    assert!(cfg.get("lfs").is_none());
    let local = std::fs::read(model("all-MiniLM-L6-v2").join("config.json")).unwrap();
    assert_eq!(cfg["oid"], git_blob_oid(&local).as_str());
    assert!(rec.header("link").is_none());

    // Not recursive: only the top level.
    let top = get(&format!("{base}/api/models/{MINILM}/tree/main")).json();
    let top: Vec<&str> = top
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(top.contains(&"onnx") && top.contains(&"config.json"));
    assert!(!top.contains(&"onnx/model.onnx"));

    // A sub-folder.
    let sub = get(&format!("{base}/api/models/{MINILM}/tree/main/1_Pooling")).json();
    assert_eq!(sub.as_array().unwrap().len(), 1);
    assert_eq!(sub[0]["path"], "1_Pooling/config.json");
    let nodir = get(&format!("{base}/api/models/{MINILM}/tree/main/nodir"));
    assert_eq!(nodir.status, 404);
    assert_eq!(nodir.error_code(), Some("EntryNotFound"));

    // Pages of 4, followed through Link headers, give the same listing.
    hub.set_tree_page_size(4);
    let mut url = format!("{base}/api/models/{MINILM}/tree/main?recursive=true");
    let mut paged = Vec::new();
    let mut pages = 0;
    loop {
        let r = get(&url);
        assert_eq!(r.status, 200);
        pages += 1;
        paged.extend(r.json().as_array().unwrap().iter().cloned());
        match r.header("link") {
            Some(link) => {
                assert!(link.ends_with("; rel=\"next\""), "{link}");
                url = link[1..link.find('>').unwrap()].to_string();
            }
            None => break,
        }
    }
    assert_eq!(&paged, entries);
    assert_eq!(pages, entries.len().div_ceil(4));
}

#[test]
fn auth_errors_have_the_hub_codes() {
    let public = FakeRepo::model("org/public").with_file("a.txt", FileSource::bytes("a"));
    let private = FakeRepo::model("org/private")
        .with_file("a.txt", FileSource::bytes("a"))
        .private("hf_private");
    let gated = FakeRepo::model("org/gated")
        .with_file("a.txt", FileSource::bytes("a"))
        .with_file("w.bin", FileSource::bytes(vec![1u8; 1000]))
        .gated("hf_gated");
    let hub = FakeHub::start(vec![public, private, gated]);
    let base = hub.endpoint();

    // Unknown repository: 401 anonymously, 404 with a token.
    let r = get(&format!("{base}/api/models/org/nothing"));
    assert_eq!((r.status, r.error_code()), (401, Some("RepoNotFound")));
    assert_eq!(
        r.json()["error"].as_str().map(|s| !s.is_empty()),
        Some(true)
    );
    let r = get_auth(&format!("{base}/api/models/org/nothing"), "hf_any");
    assert_eq!((r.status, r.error_code()), (404, Some("RepoNotFound")));
    let r = get(&format!("{base}/org/nothing/resolve/main/a.txt"));
    assert_eq!((r.status, r.error_code()), (401, Some("RepoNotFound")));
    let r = get(&format!("{base}/api/datasets/org/public"));
    assert_eq!((r.status, r.error_code()), (401, Some("RepoNotFound")));

    // Private: hidden like an unknown repository unless the token is the right one.
    for url in [
        format!("{base}/api/models/org/private"),
        format!("{base}/org/private/resolve/main/a.txt"),
    ] {
        let r = get(&url);
        assert_eq!((r.status, r.error_code()), (401, Some("RepoNotFound")));
        let r = get_auth(&url, "hf_wrong");
        assert_eq!((r.status, r.error_code()), (404, Some("RepoNotFound")));
        let r = get_auth(&url, "hf_private");
        assert_eq!(r.status, 200, "{url}");
    }
    assert_eq!(
        get_auth(&format!("{base}/api/models/org/private"), "hf_private").json()["private"],
        true
    );

    // Gated: info and tree are public, files need the token.
    let info = get(&format!("{base}/api/models/org/gated"));
    assert_eq!(info.status, 200);
    assert_eq!(info.json()["gated"], "manual");
    assert_eq!(
        get(&format!("{base}/api/models/org/gated/tree/main")).status,
        200
    );
    for file in ["a.txt", "w.bin"] {
        let url = format!("{base}/org/gated/resolve/main/{file}");
        let r = get(&url);
        assert_eq!((r.status, r.error_code()), (401, Some("GatedRepo")));
        let r = request("HEAD", &url, &[("Authorization", "Bearer hf_wrong")]);
        assert_eq!((r.status, r.error_code()), (403, Some("GatedRepo")));
        assert!(r.header("x-error-message").is_some());
        let r = get_auth(&url, "hf_gated");
        assert!(r.status == 200 || r.status == 302, "{}", r.status);
    }
    let log = hub.requests_matching("/org/gated/resolve/");
    assert!(
        log.iter()
            .any(|r| r.authorization.as_deref() == Some("Bearer hf_gated"))
    );
}

#[test]
fn injected_failures_and_cuts() {
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 256) as u8).collect();
    let repo = FakeRepo::dataset("org/ds")
        .with_file("data/train.parquet", FileSource::bytes(body.clone()))
        .with_file("README.md", FileSource::bytes("# ds\n"));
    let hub = FakeHub::start(vec![repo]);
    let base = hub.endpoint();

    hub.set_failures("/api/datasets/org/ds", 2, 503);
    let url = format!("{base}/api/datasets/org/ds");
    assert_eq!(get(&url).status, 503);
    assert_eq!(get(&url).status, 503);
    assert_eq!(get(&url).status, 200);

    let resolve = format!("{base}/datasets/org/ds/resolve/main/data/train.parquet");
    let location = request("HEAD", &resolve, &[])
        .header("location")
        .unwrap()
        .to_string();
    hub.cut_after("/cdn/", 1000);
    let cut = get(&location);
    assert_eq!(cut.status, 200);
    assert_eq!(cut.header("content-length"), Some("200000"));
    assert_eq!(cut.body, &body[..1000]);
    let log = hub.requests_matching("/cdn/");
    assert!(log[0].cut && log[0].bytes_sent == 1000);

    // Resume from where it stopped; only one cut was asked for.
    let rest = request("GET", &location, &[("Range", "bytes=1000-")]);
    assert_eq!(rest.status, 206);
    assert_eq!(rest.body, &body[1000..]);

    // Cuts apply to small files' resolve too.
    hub.cut_after("README.md", 2);
    let readme = get(&format!("{base}/datasets/org/ds/resolve/main/README.md"));
    assert_eq!(readme.body, b"# ");
}

#[test]
fn concurrent_connections_are_served() {
    let hub = minilm_hub();
    let url = format!("{}/{MINILM}/resolve/main/tokenizer.json", hub.endpoint());
    let local = std::fs::read(model("all-MiniLM-L6-v2").join("tokenizer.json")).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8).map(|_| s.spawn(|| get(&url))).collect();
        for h in handles {
            let r = h.join().unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.body, local);
        }
    });
    assert_eq!(hub.requests().len(), 8);
}

#[test]
fn stop_refuses_connections() {
    let hub = FakeHub::start(vec![]);
    let port = hub.port();
    assert_eq!(
        get(&format!("{}/api/models/a/b", hub.endpoint())).status,
        401
    );
    hub.stop();
    let err = TcpStream::connect(("127.0.0.1", port)).expect_err("refused after stop");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

/// Row counts and column names of Parquet files, read by pyarrow.
fn pyarrow_rows(files: &[&Path]) -> Value {
    const SCRIPT: &str = "import json, sys\nimport pyarrow.parquet as pq\nout = []\nfor p in sys.argv[1:]:\n    t = pq.read_table(p)\n    out.append({'rows': t.num_rows, 'columns': t.column_names, 'messages': str(t.schema.field('messages').type)})\nprint(json.dumps(out))\n";
    let ran = run_ok(python().arg("-c").arg(SCRIPT).args(files));
    serde_json::from_str(&ran.stdout).expect("JSON from python")
}

#[test]
fn smoltalk_like_dataset_serves_readable_parquet() {
    let id = "HuggingFaceTB/smoltalk-like";
    let hub = FakeHub::start(vec![FakeRepo::smoltalk_like_dataset(id)]);
    let base = hub.endpoint();
    let info = get(&format!("{base}/api/datasets/{id}")).json();
    assert_eq!(info["id"], id);
    assert!(info.get("modelId").is_none());
    let configs = info["cardData"]["configs"].as_array().unwrap();
    assert_eq!(configs.len(), 2);
    assert_eq!(configs[0]["config_name"], "all");
    assert_eq!(configs[1]["config_name"], "small");
    assert_eq!(
        configs[1]["data_files"][1],
        serde_json::json!({"split": "test", "path": "data/small/test-*"})
    );
    let siblings: Vec<String> = info["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rfilename"].as_str().unwrap().to_string())
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let mut locals = Vec::new();
    let mut expected = Vec::new();
    for (config, split, rows) in SMOLTALK_LIKE_SPLITS {
        for (i, n) in rows.iter().enumerate() {
            let rel = format!("data/{config}/{split}-{i:05}-of-{:05}.parquet", rows.len());
            assert!(siblings.contains(&rel), "{rel} not in {siblings:?}");
            let got = download(&format!("{base}/datasets/{id}/resolve/main/{rel}"), None);
            assert_eq!(got.status, 200, "{rel}");
            let local = dir.path().join(rel.replace('/', "_"));
            std::fs::write(&local, &got.body).unwrap();
            locals.push(local);
            expected.push(*n);
        }
    }
    assert_eq!(siblings.len(), locals.len() + 2, "{siblings:?}");
    let paths: Vec<&Path> = locals.iter().map(|p| p.as_path()).collect();
    let read = pyarrow_rows(&paths);
    for (got, n) in read.as_array().unwrap().iter().zip(&expected) {
        assert_eq!(got["rows"], *n as u64, "{read}");
        assert_eq!(got["columns"], serde_json::json!(["id", "messages"]));
        assert!(
            got["messages"].as_str().unwrap().starts_with("list<"),
            "{got}"
        );
    }
    assert_eq!(hub.cdn_auth_violations(), 0);
}

#[test]
fn parquet_converted_only_keeps_data_on_the_convert_ref() {
    let id = "org/converted";
    let hub = FakeHub::start(vec![FakeRepo::parquet_converted_only(id)]);
    let base = hub.endpoint();
    let main = get(&format!("{base}/api/datasets/{id}")).json();
    assert!(main["cardData"].get("configs").is_none());
    assert_eq!(main["cardData"]["license"], "mit");
    let main_files: Vec<&str> = main["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rfilename"].as_str().unwrap())
        .collect();
    assert!(main_files.iter().all(|f| !f.ends_with(".parquet")));

    let encoded = "refs%2Fconvert%2Fparquet";
    let conv = get(&format!("{base}/api/datasets/{id}/revision/{encoded}"));
    assert_eq!(conv.status, 200);
    let conv_sha = conv.json()["sha"].as_str().unwrap().to_string();
    assert_ne!(conv_sha, main["sha"].as_str().unwrap());
    assert_eq!(
        hub.commit(RepoKind::Dataset, id, PARQUET_REVISION)
            .as_deref(),
        Some(conv_sha.as_str())
    );
    let tree = get(&format!(
        "{base}/api/datasets/{id}/tree/{encoded}/default/train?recursive=true"
    ))
    .json();
    let listed: Vec<&str> = tree
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        ["default/train/0000.parquet", "default/train/0001.parquet"]
    );

    let dir = tempfile::tempdir().unwrap();
    let mut locals = Vec::new();
    for i in 0..PARQUET_CONVERTED_ROWS.len() {
        let url = format!("{base}/datasets/{id}/resolve/{encoded}/default/train/{i:04}.parquet");
        let first = request("HEAD", &url, &[]);
        assert_eq!(first.status, 302);
        assert_eq!(first.header("x-repo-commit"), Some(conv_sha.as_str()));
        let got = download(&url, None);
        assert_eq!(got.status, 200);
        let local = dir.path().join(format!("{i}.parquet"));
        std::fs::write(&local, &got.body).unwrap();
        locals.push(local);
    }
    // On main the files do not exist.
    let r = get(&format!(
        "{base}/datasets/{id}/resolve/main/default/train/0000.parquet"
    ));
    assert_eq!((r.status, r.error_code()), (404, Some("EntryNotFound")));

    let paths: Vec<&Path> = locals.iter().map(|p| p.as_path()).collect();
    let read = pyarrow_rows(&paths);
    let rows: Vec<u64> = read
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rows"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = PARQUET_CONVERTED_ROWS.iter().map(|&n| n as u64).collect();
    assert_eq!(rows, expected);
}
