//! A Hugging Face Hub client that shares `huggingface_hub`'s cache: it resolves a repository
//! revision to a commit and its file list ([`Hub::snapshot`]) and downloads files into the cache
//! ([`Hub::download`]), resuming partial downloads and verifying sizes and LFS sha256 sums.
//!
//! Configuration comes from the same variables as in Python ([`HubConfig::from_env`]):
//! `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE` and `HF_TOKEN` (or the token file
//! written by `hf auth login`). With `HF_HUB_OFFLINE` set, nothing touches the network and
//! everything comes from the cache. The token goes to the endpoint only, never to the file host
//! that large files are redirected to, and never into messages or logs.
//!
//! - `config`: environment, token, retry policy.
//! - `repo`: repository kinds, ids, revisions and URL quoting.
//! - `client`: [`Hub`], [`Snapshot`] and the repository listing.
//! - `download`: downloading a file into the cache.
//! - `cache`: the cache layout (blobs, refs, snapshot links, listings).
//! - `http`: the agent, retries, redirects, error answers.
//! - `error`: [`HubError`].

mod cache;
mod client;
mod config;
mod download;
mod error;
mod http;
mod repo;

#[cfg(test)]
mod tests;

pub use client::{Hub, Snapshot};
pub use config::HubConfig;
#[cfg(test)]
pub use config::RetryPolicy;
#[cfg(test)]
pub use error::HubError;
pub use repo::{RepoKind, RepoRef, looks_like_repo_id};
