//! Prompts, as sentence-transformers applies them.
//!
//! `config_sentence_transformers.json` (in the model folder) may hold `prompts` (name → text)
//! and `default_prompt_name`. The prompt in use is `--prompt TEXT`, else the one named by
//! `--prompt-name`, else the default one; an empty prompt is no prompt. The prompt's text is
//! prepended to every text before tokenizing (`prompt + text`, nothing in between). When the
//! Pooling config says `include_prompt: false`, the prompt's tokens are left out of pooling:
//! their count is the length of the prompt tokenized alone (special tokens included), less one
//! when the last of those is a special token (`[SEP]`, EOS), as in sentence-transformers 6.2's
//! `Transformer._get_prompt_length`; pooling then skips that many tokens from each row's first
//! real token, whichever side the padding is on.

use std::path::Path;

use serde_json::Value;

use crate::config::PromptChoice;
use crate::error::{Error, Result};

/// The file holding a model's prompts.
pub const CONFIG_FILE: &str = "config_sentence_transformers.json";

/// The prompt in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// Its name in the folder's `prompts`, or `None` for `--prompt TEXT`.
    pub name: Option<String>,
    /// The text prepended to every text.
    pub text: String,
}

/// Works out the prompt from the user's choice and the folder's
/// `config_sentence_transformers.json`. An unknown name is an error listing the known ones.
pub fn resolve(dir: &Path, choice: &PromptChoice) -> Result<Option<Prompt>> {
    if let PromptChoice::Text(text) = choice {
        return Ok((!text.is_empty()).then(|| Prompt {
            name: None,
            text: text.clone(),
        }));
    }
    let path = dir.join(CONFIG_FILE);
    let cfg: Value = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|source| Error::ParseConfig {
            path: path.clone(),
            source,
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Null,
        Err(source) => return Err(Error::ReadConfig { path, source }),
    };
    let prompts = cfg.get("prompts").and_then(Value::as_object);
    let (name, explicit) = match choice {
        PromptChoice::Name(n) => (n.clone(), true),
        _ => match cfg.get("default_prompt_name").and_then(Value::as_str) {
            Some(n) => (n.to_string(), false),
            None => return Ok(None),
        },
    };
    let Some(text) = prompts.and_then(|p| p.get(&name)) else {
        let mut known: Vec<&str> = prompts
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        known.sort_unstable();
        let known = if known.is_empty() {
            "it has none".to_string()
        } else {
            format!("its prompts: {}", known.join(", "))
        };
        let msg = if explicit {
            format!(
                "--prompt-name {name}: no such prompt in {} ({known})",
                path.display()
            )
        } else {
            format!(
                "{}: default_prompt_name {name} is not one of the prompts ({known})",
                path.display()
            )
        };
        return Err(Error::BadOption(msg));
    };
    let Some(text) = text.as_str() else {
        return Err(Error::BadConfig {
            path,
            reason: format!("prompt {name} is not a string"),
        });
    };
    Ok((!text.is_empty()).then(|| Prompt {
        name: Some(name),
        text: text.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(json: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(CONFIG_FILE), json).unwrap();
        d
    }

    #[test]
    fn named_default_and_text_prompts() {
        let d =
            folder(r#"{"prompts": {"query": "q: ", "doc": ""}, "default_prompt_name": "query"}"#);
        let q = resolve(d.path(), &PromptChoice::Default).unwrap().unwrap();
        assert_eq!((q.name.as_deref(), q.text.as_str()), (Some("query"), "q: "));
        assert_eq!(
            resolve(d.path(), &PromptChoice::Name("doc".into())).unwrap(),
            None
        );
        let t = resolve(d.path(), &PromptChoice::Text("x ".into()))
            .unwrap()
            .unwrap();
        assert_eq!((t.name, t.text.as_str()), (None, "x "));
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let d = folder(r#"{"prompts": {"query": "q: ", "doc": "d: "}}"#);
        let err = resolve(d.path(), &PromptChoice::Name("passage".into())).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("--prompt-name passage: no such prompt"),
            "{msg}"
        );
        assert!(msg.ends_with("(its prompts: doc, query)"), "{msg}");
        assert_eq!(resolve(d.path(), &PromptChoice::Default).unwrap(), None);
        let none = tempfile::tempdir().unwrap();
        let err = resolve(none.path(), &PromptChoice::Name("q".into())).unwrap_err();
        assert!(err.to_string().ends_with("(it has none)"), "{err}");
    }
}
