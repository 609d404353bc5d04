//! Which files of a dataset repository or folder make up a subset's split, decided the way the
//! `datasets` library does for the usual layouts:
//!
//! 1. `configs:` in the YAML header of `README.md`: `--subset` names a `config_name` (without it,
//!    the config marked `default: true`, else one named `default`, else the only one), and its
//!    `data_files` map splits to glob patterns (`*` stays inside a folder, `**` crosses folders).
//! 2. Otherwise, file and folder names: a file belongs to a split when its name starts with the
//!    split's name (or a synonym: `training`; `valid`, `val`, `dev`; `testing`, `eval`,
//!    `evaluation`) followed by `-`, `_`, `.` or a digit, or when one of its folders is named so
//!    (`data/train-00000-of-00002.parquet`, `train/part-0.jsonl`). When no file names a split,
//!    every data file is `train`.
//!
//! `datasets` never turns plain folders into subsets; chatspace additionally accepts `--subset X`
//! for a repository without `configs:` when it has an `X/` or `data/X/` folder, and then looks
//! for splits inside it.

use std::collections::BTreeSet;

use glob::{MatchOptions, Pattern};
use serde::Deserialize;

/// File extensions read as data.
pub const DATA_EXTENSIONS: [&str; 4] = [".parquet", ".jsonl", ".ndjson", ".json"];

/// Is `path` a data file (by extension)?
pub fn is_data_file(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let name = lower.rsplit('/').next().unwrap_or(&lower);
    !name.starts_with('.') && DATA_EXTENSIONS.iter().any(|e| lower.ends_with(e))
}

/// One `configs:` entry of a dataset card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSpec {
    /// `config_name`.
    pub name: String,
    /// `default: true`.
    pub default: bool,
    /// `(split, patterns)` in card order.
    pub data_files: Vec<(String, Vec<String>)>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
struct SplitFiles {
    split: String,
    path: OneOrMany,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DataFiles {
    Splits(Vec<SplitFiles>),
    Plain(OneOrMany),
}

#[derive(Deserialize)]
struct RawConfig {
    config_name: Option<String>,
    #[serde(default)]
    default: bool,
    data_files: Option<DataFiles>,
}

#[derive(Deserialize)]
struct Card {
    #[serde(default)]
    configs: Vec<RawConfig>,
}

/// The `configs:` of a `README.md` (empty when there is no YAML header or no `configs:`).
pub fn parse_card_configs(readme: &str) -> Result<Vec<ConfigSpec>, String> {
    let Some(rest) = readme.trim_start_matches('\u{feff}').strip_prefix("---") else {
        return Ok(Vec::new());
    };
    let Some(end) = rest.find("\n---") else {
        return Ok(Vec::new());
    };
    let card: Card = serde_norway::from_str(&rest[..end])
        .map_err(|e| format!("the YAML header of README.md is not valid: {e}"))?;
    Ok(card
        .configs
        .into_iter()
        .map(|c| ConfigSpec {
            name: c.config_name.unwrap_or_else(|| "default".into()),
            default: c.default,
            data_files: match c.data_files {
                None => Vec::new(),
                Some(DataFiles::Plain(p)) => vec![("train".into(), p.into_vec())],
                Some(DataFiles::Splits(v)) => v
                    .into_iter()
                    .map(|s| (s.split, s.path.into_vec()))
                    .collect(),
            },
        })
        .collect())
}

/// Why no files could be chosen; each message lists what does exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// `--subset` names no config (or folder).
    #[error("has no subset `{subset}`; subsets: {available}")]
    NoSuchSubset {
        /// What was asked for.
        subset: String,
        /// What exists.
        available: String,
    },
    /// Several configs and no default.
    #[error("has several subsets ({available}); pass --subset")]
    SubsetNeeded {
        /// What exists.
        available: String,
    },
    /// The split is not there.
    #[error("has no split `{split}`{within}; splits: {available}")]
    NoSuchSplit {
        /// What was asked for.
        split: String,
        /// ` in subset X`, or empty.
        within: String,
        /// What exists.
        available: String,
    },
    /// No data files at all.
    #[error("holds no .parquet, .jsonl or .json files")]
    NoDataFiles,
}

fn pattern_matches(pattern: &str, path: &str) -> bool {
    let opts = MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let pattern = pattern.trim_start_matches("./");
    Pattern::new(pattern).is_ok_and(|p| p.matches_with(path, opts))
}

fn synonyms(split: &str) -> Vec<&str> {
    match split {
        "train" => vec!["train", "training"],
        "validation" => vec!["validation", "valid", "val", "dev"],
        "test" => vec!["test", "testing", "eval", "evaluation"],
        other => vec![other],
    }
}

/// The canonical split a relative path names, if any.
fn split_named_by(rel: &str, splits: &[&str]) -> Option<String> {
    let mut parts: Vec<&str> = rel.split('/').collect();
    let name = parts.pop().unwrap_or_default();
    for &split in splits {
        for word in synonyms(split) {
            let by_name = name.strip_prefix(word).is_some_and(|rest| {
                rest.starts_with(['-', '_', '.']) || rest.starts_with(|c: char| c.is_ascii_digit())
            });
            if by_name || parts.contains(&word) {
                return Some(split.to_string());
            }
        }
    }
    None
}

fn join(items: impl IntoIterator<Item = String>) -> String {
    let v: Vec<String> = items.into_iter().collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Picks the files of (`subset`, `split`) among `files` (paths relative to the repo root, `/`
/// separated), sorted.
pub fn select(
    files: &[String],
    configs: &[ConfigSpec],
    subset: Option<&str>,
    split: &str,
) -> Result<Vec<String>, SelectError> {
    let data: Vec<&String> = files.iter().filter(|f| is_data_file(f)).collect();
    if !configs.is_empty() {
        return select_by_config(&data, configs, subset, split);
    }
    if data.is_empty() {
        return Err(SelectError::NoDataFiles);
    }
    let (base, within) = match subset {
        None => (String::new(), String::new()),
        Some(sub) => {
            let prefixes = [format!("{sub}/"), format!("data/{sub}/")];
            match prefixes
                .iter()
                .find(|p| data.iter().any(|f| f.starts_with(p.as_str())))
            {
                Some(p) => (p.clone(), format!(" in subset {sub}")),
                None => {
                    let folders: BTreeSet<String> = data
                        .iter()
                        .filter_map(|f| {
                            let f = f.strip_prefix("data/").unwrap_or(f);
                            f.split_once('/').map(|(d, _)| d.to_string())
                        })
                        .collect();
                    return Err(SelectError::NoSuchSubset {
                        subset: sub.into(),
                        available: join(folders),
                    });
                }
            }
        }
    };
    let candidates: Vec<(&String, &str)> = data
        .iter()
        .filter_map(|f| f.strip_prefix(base.as_str()).map(|rel| (*f, rel)))
        .collect();
    const KNOWN: [&str; 3] = ["train", "validation", "test"];
    let mut wanted: Vec<&str> = KNOWN.to_vec();
    if !KNOWN.contains(&split) {
        wanted.insert(0, split);
    }
    let named: Vec<(&String, Option<String>)> = candidates
        .iter()
        .map(|(f, rel)| (*f, split_named_by(rel, &wanted)))
        .collect();
    let chosen: Vec<String> = named
        .iter()
        .filter(|(_, s)| s.as_deref() == Some(split))
        .map(|(f, _)| (*f).clone())
        .collect();
    if !chosen.is_empty() {
        return Ok(sorted(chosen));
    }
    let present: BTreeSet<String> = named.iter().filter_map(|(_, s)| s.clone()).collect();
    if present.is_empty() && split == "train" {
        return Ok(sorted(
            candidates.iter().map(|(f, _)| (*f).clone()).collect(),
        ));
    }
    let available = if present.is_empty() {
        "train".to_string()
    } else {
        join(present)
    };
    Err(SelectError::NoSuchSplit {
        split: split.into(),
        within,
        available,
    })
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

fn select_by_config(
    data: &[&String],
    configs: &[ConfigSpec],
    subset: Option<&str>,
    split: &str,
) -> Result<Vec<String>, SelectError> {
    let names = || join(configs.iter().map(|c| c.name.clone()));
    let config = match subset {
        Some(sub) => {
            configs
                .iter()
                .find(|c| c.name == sub)
                .ok_or_else(|| SelectError::NoSuchSubset {
                    subset: sub.into(),
                    available: names(),
                })?
        }
        None => configs
            .iter()
            .find(|c| c.default)
            .or_else(|| configs.iter().find(|c| c.name == "default"))
            .or(if configs.len() == 1 {
                configs.first()
            } else {
                None
            })
            .ok_or_else(|| SelectError::SubsetNeeded { available: names() })?,
    };
    let within = format!(" in subset {}", config.name);
    if config.data_files.is_empty() {
        // A config without data_files: the whole repo's files by name.
        return select(
            &data.iter().map(|s| (*s).clone()).collect::<Vec<_>>(),
            &[],
            None,
            split,
        );
    }
    let Some((_, patterns)) = config.data_files.iter().find(|(s, _)| s == split) else {
        return Err(SelectError::NoSuchSplit {
            split: split.into(),
            within,
            available: join(config.data_files.iter().map(|(s, _)| s.clone())),
        });
    };
    let chosen: Vec<String> = data
        .iter()
        .filter(|f| patterns.iter().any(|p| pattern_matches(p, f)))
        .map(|f| (*f).clone())
        .collect();
    if chosen.is_empty() {
        return Err(SelectError::NoDataFiles);
    }
    Ok(sorted(chosen))
}

/// Picks the files of `refs/convert/parquet` (the Hub's automatic Parquet conversion):
/// `<config>/<split>/*.parquet` or `<config>/partial-<split>/*.parquet`.
pub fn select_converted(
    files: &[String],
    subset: Option<&str>,
    split: &str,
) -> Result<Vec<String>, SelectError> {
    let config = subset.unwrap_or("default");
    let configs: BTreeSet<String> = files
        .iter()
        .filter(|f| f.ends_with(".parquet"))
        .filter_map(|f| f.split_once('/').map(|(c, _)| c.to_string()))
        .collect();
    if !configs.contains(config) {
        return Err(match subset {
            Some(sub) => SelectError::NoSuchSubset {
                subset: sub.into(),
                available: join(configs),
            },
            None if configs.is_empty() => SelectError::NoDataFiles,
            None => SelectError::SubsetNeeded {
                available: join(configs),
            },
        });
    }
    let prefix = [
        format!("{config}/{split}/"),
        format!("{config}/partial-{split}/"),
    ];
    let chosen: Vec<String> = files
        .iter()
        .filter(|f| f.ends_with(".parquet") && prefix.iter().any(|p| f.starts_with(p.as_str())))
        .cloned()
        .collect();
    if chosen.is_empty() {
        let splits: BTreeSet<String> = files
            .iter()
            .filter_map(|f| f.strip_prefix(&format!("{config}/")))
            .filter_map(|rest| {
                rest.split_once('/')
                    .map(|(s, _)| s.trim_start_matches("partial-").to_string())
            })
            .collect();
        return Err(SelectError::NoSuchSplit {
            split: split.into(),
            within: format!(" in subset {config}"),
            available: join(splits),
        });
    }
    Ok(sorted(chosen))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const SMOLTALK_CARD: &str = "---\nlicense: apache-2.0\nconfigs:\n- config_name: all\n  data_files:\n  - split: train\n    path: data/all/train-*\n  - split: test\n    path: data/all/test-*\n- config_name: small\n  data_files:\n  - split: train\n    path: data/small/train-*\n---\n# card\n";

    #[test]
    fn card_configs_pick_files() {
        let configs = parse_card_configs(SMOLTALK_CARD).unwrap();
        assert_eq!(configs.len(), 2);
        let files = paths(&[
            "README.md",
            "data/all/train-00000-of-00002.parquet",
            "data/all/train-00001-of-00002.parquet",
            "data/all/test-00000-of-00001.parquet",
            "data/small/train-00000-of-00001.parquet",
        ]);
        let got = select(&files, &configs, Some("all"), "train").unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|f| f.starts_with("data/all/train-")));
        let err = select(&files, &configs, Some("big"), "train").unwrap_err();
        assert_eq!(err.to_string(), "has no subset `big`; subsets: all, small");
        let err = select(&files, &configs, Some("small"), "test").unwrap_err();
        assert_eq!(
            err.to_string(),
            "has no split `test` in subset small; splits: train"
        );
        let err = select(&files, &configs, None, "train").unwrap_err();
        assert_eq!(
            err.to_string(),
            "has several subsets (all, small); pass --subset"
        );
    }

    #[test]
    fn plain_and_default_configs() {
        let card = "---\nconfigs:\n- config_name: default\n  data_files: corpus/*.jsonl\n---\n";
        let configs = parse_card_configs(card).unwrap();
        let files = paths(&["corpus/a.jsonl", "corpus/b.jsonl", "other/c.jsonl"]);
        assert_eq!(
            select(&files, &configs, None, "train").unwrap(),
            paths(&["corpus/a.jsonl", "corpus/b.jsonl"])
        );
        assert!(parse_card_configs("# no header").unwrap().is_empty());
    }

    #[test]
    fn split_names_in_files_and_folders() {
        let files = paths(&[
            "data/train-00000-of-00002.parquet",
            "data/train-00001-of-00002.parquet",
            "data/validation-00000-of-00001.parquet",
            "dev/x.jsonl",
        ]);
        assert_eq!(select(&files, &[], None, "train").unwrap().len(), 2);
        assert_eq!(
            select(&files, &[], None, "validation").unwrap(),
            paths(&["data/validation-00000-of-00001.parquet", "dev/x.jsonl"])
        );
        let err = select(&files, &[], None, "test").unwrap_err();
        assert_eq!(
            err.to_string(),
            "has no split `test`; splits: train, validation"
        );
    }

    #[test]
    fn unnamed_files_are_train_only() {
        let files = paths(&["a.parquet", "b.parquet", "README.md"]);
        assert_eq!(select(&files, &[], None, "train").unwrap().len(), 2);
        assert!(select(&files, &[], None, "test").is_err());
        assert_eq!(
            select(&paths(&["README.md"]), &[], None, "train").unwrap_err(),
            SelectError::NoDataFiles
        );
    }

    #[test]
    fn folders_as_subsets_without_a_card() {
        let files = paths(&[
            "all/train-0.parquet",
            "small/train-0.parquet",
            "small/test-0.parquet",
        ]);
        assert_eq!(
            select(&files, &[], Some("small"), "test").unwrap(),
            paths(&["small/test-0.parquet"])
        );
        let err = select(&files, &[], Some("tiny"), "train").unwrap_err();
        assert_eq!(err.to_string(), "has no subset `tiny`; subsets: all, small");
    }

    #[test]
    fn converted_parquet_branch() {
        let files = paths(&[
            "default/train/0000.parquet",
            "default/train/0001.parquet",
            "default/partial-test/0000.parquet",
        ]);
        assert_eq!(select_converted(&files, None, "train").unwrap().len(), 2);
        assert_eq!(select_converted(&files, None, "test").unwrap().len(), 1);
        let err = select_converted(&files, None, "validation").unwrap_err();
        assert_eq!(
            err.to_string(),
            "has no split `validation` in subset default; splits: test, train"
        );
    }

    #[test]
    fn star_stays_in_its_folder() {
        assert!(pattern_matches("data/*.parquet", "data/a.parquet"));
        assert!(!pattern_matches("data/*.parquet", "data/x/a.parquet"));
        assert!(pattern_matches("data/**/*.parquet", "data/x/a.parquet"));
    }
}
