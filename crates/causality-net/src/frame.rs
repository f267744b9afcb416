//! Request and response frames on a stream: an unsigned-varint length, then that many bytes.
//!
//! Written here rather than taken from a codec crate: the frame is six lines of varint, and
//! the read must refuse an oversize length before reading, and allocate only as the bytes
//! arrive, so a peer that announces 4 MiB and sends one byte a second holds 64 KiB of our
//! memory, not 4 MiB.

use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Bytes allocated up front for a frame; the rest grows as it arrives.
const INITIAL: usize = 64 * 1024;

fn invalid(detail: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, detail)
}

/// Reads one frame of at most `max` bytes.
pub(crate) async fn read_frame<T: AsyncRead + Unpin>(
    io: &mut T,
    max: usize,
) -> std::io::Result<Vec<u8>> {
    let mut len: u64 = 0;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8; 1];
        io.read_exact(&mut byte).await?;
        len |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
        if shift >= 56 {
            return Err(invalid("length varint too long".into()));
        }
    }
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > max {
        return Err(invalid(format!(
            "frame of {len} bytes exceeds the limit of {max}"
        )));
    }
    let mut buf = Vec::with_capacity(len.min(INITIAL));
    let read = (&mut *io).take(len as u64).read_to_end(&mut buf).await?;
    if read != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("frame ended after {read} of {len} bytes"),
        ));
    }
    Ok(buf)
}

/// Writes one frame and closes the writing side.
pub(crate) async fn write_frame<T: AsyncWrite + Unpin>(
    io: &mut T,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut len = bytes.len() as u64;
    let mut prefix = Vec::with_capacity(10);
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            prefix.push(byte);
            break;
        }
        prefix.push(byte | 0x80);
    }
    io.write_all(&prefix).await?;
    io.write_all(bytes).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_limits_hold() {
        futures::executor::block_on(async {
            let mut wire = Vec::new();
            write_frame(&mut futures::io::Cursor::new(&mut wire), &[7u8; 300])
                .await
                .unwrap();
            let mut reader = futures::io::Cursor::new(wire.clone());
            assert_eq!(read_frame(&mut reader, 300).await.unwrap(), vec![7u8; 300]);
            let mut reader = futures::io::Cursor::new(wire.clone());
            let err = read_frame(&mut reader, 299).await.unwrap_err();
            assert!(err.to_string().contains("exceeds the limit"), "{err}");
            // A frame announcing more than it carries.
            let mut short = wire;
            short.truncate(100);
            let err = read_frame(&mut futures::io::Cursor::new(short), 300)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
            // Ten continuation bytes.
            let err = read_frame(&mut futures::io::Cursor::new(vec![0x80; 11]), 300)
                .await
                .unwrap_err();
            assert!(err.to_string().contains("varint"), "{err}");
        });
    }
}
