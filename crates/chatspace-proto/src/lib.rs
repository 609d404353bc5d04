//! The wire contract between the `chatspace` supervisor and its `chatspace-encoder` processes.
//!
//! Both binaries depend on this crate and on nothing else for talking to each other:
//! - [`msg`]: the messages, plain serde data with no engine types in them;
//! - [`frame`]: how one message becomes bytes (a `u32` length prefix and a bincode body, at most
//!   [`frame::MAX_FRAME`] bytes), with no I/O;
//! - [`conn`]: frames over blocking streams, and over tokio streams with the `tokio`
//!   feature; [`conn::socket_name`] turns a socket path into an `interprocess` local socket name;
//! - [`exit`]: every exit code the two binaries can return;
//! - [`device`]: where an encoder runs (`cpu`, `cuda:K`), as the supervisor passes it.
//!
//! A session starts with the encoder's [`msg::Hello`] (protocol version and the per-run secret the
//! supervisor handed it), answered by [`msg::ToEncoder::Welcome`] or [`msg::ToEncoder::Reject`];
//! the encoder then loads its model and reports [`msg::FromEncoder::Ready`] or
//! [`msg::FromEncoder::Fatal`]. After that the supervisor sends numbered work units and the
//! encoder answers each with the same unit id, so a unit can be re-sent elsewhere after a failure.
#![deny(missing_docs)]

pub mod conn;
pub mod device;
pub mod error;
pub mod exit;
pub mod frame;
pub mod msg;

pub use conn::{read_frame, socket_name, write_frame};
pub use device::Device;
pub use error::ProtoError;
pub use msg::{FromEncoder, Hello, ModelInfo, PROTO_VERSION, ToEncoder, Work};
