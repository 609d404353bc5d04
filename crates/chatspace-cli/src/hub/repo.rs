//! Naming a repository on the Hub: its kind, id and revision, and how those appear in URLs and
//! in cache folder names.

use std::fmt;

/// A model or a dataset repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RepoKind {
    /// `/api/models/...`, cached as `models--org--name`.
    Model,
    /// `/api/datasets/...`, cached as `datasets--org--name`.
    Dataset,
}

impl RepoKind {
    /// `model` or `dataset`, as in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            RepoKind::Model => "model",
            RepoKind::Dataset => "dataset",
        }
    }

    /// `models` or `datasets`: the API path segment and the cache folder prefix.
    pub fn plural(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }

    /// What comes before the id in a file URL: nothing for models, `datasets/` for datasets.
    pub fn url_prefix(self) -> &'static str {
        match self {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
        }
    }
}

impl fmt::Display for RepoKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A repository at a revision (a branch, a tag, a ref such as `refs/convert/parquet`, or a
/// commit sha).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoRef {
    /// Model or dataset.
    pub kind: RepoKind,
    /// `org/name` (or a bare `name`).
    pub id: String,
    /// The revision; `main` unless given.
    pub revision: String,
}

impl RepoRef {
    /// `id` at `main`.
    pub fn new(kind: RepoKind, id: impl Into<String>) -> RepoRef {
        RepoRef {
            kind,
            id: id.into(),
            revision: "main".to_string(),
        }
    }

    /// The same repository at `revision`.
    pub fn at(mut self, revision: impl Into<String>) -> RepoRef {
        self.revision = revision.into();
        self
    }

    /// The cache folder name: `datasets--org--name`.
    pub fn folder_name(&self) -> String {
        let mut name = String::from(self.kind.plural());
        for part in self.id.split('/') {
            name.push_str("--");
            name.push_str(part);
        }
        name
    }
}

impl fmt::Display for RepoRef {
    /// `dataset org/name`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.id)
    }
}

/// Data and model file extensions: a bare `name.jsonl` is a missing local file, not a repo.
const FILE_EXTENSIONS: [&str; 9] = [
    "parquet", "jsonl", "ndjson", "json", "csv", "tsv", "arrow", "onnx", "txt",
];

/// Could `s` be a Hub repository id: `org/name` or `name`, each part made of ASCII letters,
/// digits, `-`, `_` and `.`, not starting or ending with `-` or `.`, without `--` or `..`, the
/// name at most 96 characters (the rules `huggingface_hub` checks), and not ending in a data
/// file extension such as `.jsonl`? An existing local path is never a repo id; callers check
/// the filesystem first.
pub fn looks_like_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    if parts.len() > 2 {
        return false;
    }
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !p.starts_with(['-', '.'])
            && !p.ends_with(['-', '.'])
            && !p.contains("--")
            && !p.contains("..")
    };
    let name = parts[parts.len() - 1];
    let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    parts.iter().all(|p| part_ok(p))
        && name.len() <= 96
        && !extension.is_some_and(|e| FILE_EXTENSIONS.contains(&e.as_str()))
}

/// Is `s` a full commit sha (40 lowercase hex digits)?
pub fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Percent-encodes `s` as Python's `urllib.parse.quote(s, safe=...)` does: ASCII letters,
/// digits, `_.-~` and the bytes in `safe` stay, everything else becomes `%XX`.
pub fn quote(s: &str, safe: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"_.-~".contains(&b) || safe.as_bytes().contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names() {
        let r = RepoRef::new(RepoKind::Dataset, "HuggingFaceTB/smoltalk");
        assert_eq!(r.folder_name(), "datasets--HuggingFaceTB--smoltalk");
        assert_eq!(r.revision, "main");
        assert_eq!(r.to_string(), "dataset HuggingFaceTB/smoltalk");
        let r = RepoRef::new(RepoKind::Model, "gpt2");
        assert_eq!(r.folder_name(), "models--gpt2");
    }

    #[test]
    fn repo_ids() {
        for ok in [
            "sentence-transformers/all-MiniLM-L6-v2",
            "HuggingFaceTB/smoltalk",
            "gpt2",
            "org/name.v2",
            "a_b/c_d",
        ] {
            assert!(looks_like_repo_id(ok), "{ok}");
        }
        for bad in [
            "",
            "/abs/path",
            "./rel",
            "../up",
            "~/x",
            "a/b/c",
            "org/",
            "/name",
            "data.jsonl",
            "org/train.parquet",
            "a--b/c",
            "a/b..c",
            "-a/b",
            "a/b.",
            "data/*.parquet",
            "with space/x",
            "C:\\x",
        ] {
            assert!(!looks_like_repo_id(bad), "{bad}");
        }
        assert!(!looks_like_repo_id(&format!("o/{}", "x".repeat(97))));
    }

    #[test]
    fn quoting_matches_python() {
        assert_eq!(
            quote("refs/convert/parquet", ""),
            "refs%2Fconvert%2Fparquet"
        );
        assert_eq!(quote("data/a b+c.parquet", "/"), "data/a%20b%2Bc.parquet");
        assert_eq!(quote("é", ""), "%C3%A9");
        assert_eq!(quote("v1.0_x-y~", ""), "v1.0_x-y~");
    }

    #[test]
    fn commits() {
        assert!(is_commit(&"a".repeat(40)));
        assert!(!is_commit("main"));
        assert!(!is_commit(&"A".repeat(40)));
    }
}
