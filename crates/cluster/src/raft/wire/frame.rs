//! Frames of the replication channel: a 4-byte big-endian length and that many bytes
//! of postcard.
//!
//! Frames larger than [`FRAME_MAX_BYTES`] are refused before anything is allocated,
//! so a confused or hostile peer cannot make a site allocate without bound. This
//! module must never look inside what it frames.

use std::io;

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted: a message body of the largest configurable size (1 GiB is
/// refused by the config) is far beyond this, but bodies above it are pushed in
/// [`super::BODY_CHUNK_BYTES`] pieces.
pub const FRAME_MAX_BYTES: u32 = 64 * 1024 * 1024;

/// Write one frame.
pub async fn write_frame<T: Serialize>(stream: &mut (impl AsyncWrite + Unpin), value: &T) -> io::Result<()> {
    let bytes = postcard::to_stdvec(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|len| *len <= FRAME_MAX_BYTES)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("frame of {} bytes", bytes.len())))?;
    let mut out = Vec::with_capacity(4 + bytes.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes);
    stream.write_all(&out).await?;
    stream.flush().await
}

/// Read one frame; `Ok(None)` when the peer closed the connection between frames.
pub async fn read_frame<T: DeserializeOwned>(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<Option<T>> {
    read_frame_within(stream, FRAME_MAX_BYTES).await
}

/// Read one frame of at most `max_bytes` (at most [`FRAME_MAX_BYTES`]): before a
/// peer is authenticated only small frames are read.
pub async fn read_frame_within<T: DeserializeOwned>(
    stream: &mut (impl AsyncRead + Unpin),
    max_bytes: u32,
) -> io::Result<Option<T>> {
    let max_bytes = max_bytes.min(FRAME_MAX_BYTES);
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len);
    if len > max_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes announced; at most {max_bytes} accepted"),
        ));
    }
    let mut bytes = vec![0u8; len as usize];
    stream.read_exact(&mut bytes).await?;
    postcard::from_bytes(&bytes).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::super::PeerRequest;
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_frames_are_refused_unread() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let hello = PeerRequest::Hello { proof: Some(vec![7; 32]), from: Some(2), to: Some(1) };
        write_frame(&mut a, &hello).await.unwrap();
        match read_frame::<PeerRequest>(&mut b).await.unwrap() {
            Some(PeerRequest::Hello { proof, from, to }) => {
                assert_eq!((proof.map(|p| p.len()), from, to), (Some(32), Some(2), Some(1)))
            }
            other => panic!("{other:?}"),
        }
        a.write_all(&(FRAME_MAX_BYTES + 1).to_be_bytes()).await.unwrap();
        let err = read_frame::<PeerRequest>(&mut b).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        drop(a);
        // Before authentication, a frame over the small limit is refused unread too.
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&4097u32.to_be_bytes()).await.unwrap();
        let err = read_frame_within::<PeerRequest>(&mut b, 4096).await.unwrap_err();
        assert!(err.to_string().contains("at most 4096"), "{err}");
        drop(a);
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
        assert!(read_frame::<PeerRequest>(&mut b).await.is_err(), "garbage is an error, not a panic");
        drop(a);
        assert!(read_frame::<PeerRequest>(&mut b).await.unwrap().is_none(), "clean close between frames");
    }
}
