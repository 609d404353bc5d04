//! Frames: a little-endian `u32` body length, then the bincode body. No I/O here, so the format
//! can be tested on plain bytes.

use bincode::Options;
use serde::{Serialize, de::DeserializeOwned};

use crate::error::ProtoError;

/// Largest body accepted or produced: 64 MiB. A unit's texts and vectors must fit in it.
pub const MAX_FRAME: usize = 64 << 20;

/// Bytes of the length prefix.
pub const PREFIX: usize = 4;

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_limit(MAX_FRAME as u64)
        .reject_trailing_bytes()
}

/// Encodes `msg` as one whole frame (prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtoError> {
    let len = options().serialized_size(msg).map_err(ProtoError::Encode)? as usize;
    if len > MAX_FRAME {
        return Err(ProtoError::TooLarge {
            len: len as u64,
            max: MAX_FRAME,
        });
    }
    let mut out = Vec::with_capacity(PREFIX + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    options()
        .serialize_into(&mut out, msg)
        .map_err(ProtoError::Encode)?;
    Ok(out)
}

/// Reads a length prefix and checks it against [`MAX_FRAME`] before anything is allocated.
pub fn body_len(prefix: [u8; PREFIX]) -> Result<usize, ProtoError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(ProtoError::TooLarge {
            len: len as u64,
            max: MAX_FRAME,
        });
    }
    Ok(len)
}

/// Decodes one frame body (without its prefix).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtoError> {
    options().deserialize(body).map_err(ProtoError::Decode)
}

/// Checks whether `buf` starts with a whole frame: `Ok(Some(total_len))` if so, `Ok(None)` if
/// more bytes are needed, an error if the prefix announces an oversized frame.
pub fn check(buf: &[u8]) -> Result<Option<usize>, ProtoError> {
    let Some(prefix) = buf.get(..PREFIX) else {
        return Ok(None);
    };
    let len = body_len(prefix.try_into().expect("prefix is 4 bytes"))?;
    Ok((buf.len() >= PREFIX + len).then_some(PREFIX + len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{FromEncoder, Hello, ToEncoder, Work};

    #[test]
    fn round_trip() {
        let msg = ToEncoder::Work(Work {
            unit_id: 7,
            texts: vec!["a".into(), "é 🙂\0".into()],
        });
        let bytes = encode(&msg).unwrap();
        assert_eq!(check(&bytes).unwrap(), Some(bytes.len()));
        let back: ToEncoder = decode(&bytes[PREFIX..]).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn partial_frame_needs_more() {
        let bytes = encode(&ToEncoder::Shutdown).unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(check(&bytes[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn oversized_prefix_is_rejected_before_reading_the_body() {
        let prefix = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert!(matches!(check(&prefix), Err(ProtoError::TooLarge { .. })));
    }

    #[test]
    fn garbage_body_is_a_decode_error() {
        let garbage = [0xffu8; 16];
        assert!(matches!(
            decode::<FromEncoder>(&garbage),
            Err(ProtoError::Decode(_))
        ));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&ToEncoder::Shutdown).unwrap();
        bytes.push(0);
        assert!(decode::<ToEncoder>(&bytes[PREFIX..]).is_err());
    }

    #[test]
    fn hello_version_is_readable_from_the_first_body_bytes() {
        // A supervisor of any version must find the peer's version at the same place.
        let bytes = encode(&FromEncoder::Hello(Hello {
            proto_version: 42,
            secret: "s".into(),
            encoder_id: 0,
            pid: 1,
        }))
        .unwrap();
        // Variant index 0 (varint), then the version (varint).
        assert_eq!(&bytes[PREFIX..PREFIX + 2], &[0, 42]);
    }
}
