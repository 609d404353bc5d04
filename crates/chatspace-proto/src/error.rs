//! Errors of framing and connections.

use std::io;

/// Everything that can go wrong while reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The underlying stream failed.
    #[error("socket i/o failed")]
    Io(#[from] io::Error),
    /// A frame announced a body larger than [`crate::frame::MAX_FRAME`]; nothing was allocated.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The announced body length.
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("connection closed in the middle of a frame ({got} of {want} bytes)")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes announced (prefix included).
        want: usize,
    },
    /// The body is not a valid message.
    #[error("malformed frame")]
    Decode(#[source] bincode::Error),
    /// A message could not be encoded (too large, most likely).
    #[error("could not encode message")]
    Encode(#[source] bincode::Error),
}
