//! Frames over streams: blocking ([`read_frame`], [`write_frame`]) for the encoder, and async
//! ([`read_frame_async`], [`write_frame_async`], feature `tokio`) for the supervisor.
//!
//! Reading returns `Ok(None)` on a clean end of stream between frames, and
//! [`ProtoError::Truncated`] when the stream ends inside one.

use std::io::{self, Read, Write};
use std::path::Path;

use interprocess::local_socket::{GenericFilePath, Name, ToFsName};
use serde::{Serialize, de::DeserializeOwned};

use crate::error::ProtoError;
use crate::frame::{self, PREFIX};

/// The `interprocess` name of a socket file at `path` (a Unix domain socket on Unix).
pub fn socket_name(path: &Path) -> io::Result<Name<'_>> {
    path.to_fs_name::<GenericFilePath>()
}

/// Fills `buf` from `r`; returns how many bytes were read before end of stream.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads one message; `Ok(None)` on a clean end of stream.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<Option<T>, ProtoError> {
    let mut prefix = [0u8; PREFIX];
    match read_full(r, &mut prefix)? {
        0 => return Ok(None),
        PREFIX => {}
        got => return Err(ProtoError::Truncated { got, want: PREFIX }),
    }
    let len = frame::body_len(prefix)?;
    let mut body = vec![0u8; len];
    let got = read_full(r, &mut body)?;
    if got < len {
        return Err(ProtoError::Truncated {
            got: PREFIX + got,
            want: PREFIX + len,
        });
    }
    frame::decode(&body).map(Some)
}

/// Writes one message and flushes.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), ProtoError> {
    let bytes = frame::encode(msg)?;
    w.write_all(&bytes)?;
    w.flush()?;
    Ok(())
}

#[cfg(feature = "tokio")]
mod async_io {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    use super::*;

    async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match r.read(&mut buf[got..]).await? {
                0 => break,
                n => got += n,
            }
        }
        Ok(got)
    }

    /// Reads one message; `Ok(None)` on a clean end of stream. Cancel-safe only between frames.
    pub async fn read_frame_async<R: AsyncRead + Unpin, T: DeserializeOwned>(
        r: &mut R,
    ) -> Result<Option<T>, ProtoError> {
        let mut prefix = [0u8; PREFIX];
        match read_full(r, &mut prefix).await? {
            0 => return Ok(None),
            PREFIX => {}
            got => return Err(ProtoError::Truncated { got, want: PREFIX }),
        }
        let len = frame::body_len(prefix)?;
        let mut body = vec![0u8; len];
        let got = read_full(r, &mut body).await?;
        if got < len {
            return Err(ProtoError::Truncated {
                got: PREFIX + got,
                want: PREFIX + len,
            });
        }
        frame::decode(&body).map(Some)
    }

    /// Writes one message and flushes.
    pub async fn write_frame_async<W: AsyncWrite + Unpin, T: Serialize>(
        w: &mut W,
        msg: &T,
    ) -> Result<(), ProtoError> {
        let bytes = frame::encode(msg)?;
        w.write_all(&bytes).await?;
        w.flush().await?;
        Ok(())
    }
}

#[cfg(feature = "tokio")]
pub use async_io::{read_frame_async, write_frame_async};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{ToEncoder, Work};

    #[test]
    fn clean_eof_is_none() {
        let mut empty: &[u8] = &[];
        assert!(matches!(read_frame::<_, ToEncoder>(&mut empty), Ok(None)));
    }

    #[test]
    fn frames_follow_each_other() {
        let mut buf = Vec::new();
        let a = ToEncoder::Work(Work {
            unit_id: 1,
            texts: vec!["x".into()],
        });
        write_frame(&mut buf, &a).unwrap();
        write_frame(&mut buf, &ToEncoder::Shutdown).unwrap();
        let mut r = buf.as_slice();
        assert_eq!(read_frame::<_, ToEncoder>(&mut r).unwrap(), Some(a));
        assert_eq!(
            read_frame::<_, ToEncoder>(&mut r).unwrap(),
            Some(ToEncoder::Shutdown)
        );
        assert_eq!(read_frame::<_, ToEncoder>(&mut r).unwrap(), None);
    }

    #[test]
    fn eof_inside_a_frame_is_truncated() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &ToEncoder::Shutdown).unwrap();
        for cut in 1..buf.len() {
            let mut r = &buf[..cut];
            assert!(
                matches!(
                    read_frame::<_, ToEncoder>(&mut r),
                    Err(ProtoError::Truncated { .. })
                ),
                "cut at {cut}"
            );
        }
    }
}
