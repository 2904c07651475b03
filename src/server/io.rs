//! Connection plumbing: telling HTTP/2 prior knowledge from HTTP/1 with a
//! bounded first read, and replaying the bytes read for that.
//!
//! Adapter: depends on tokio.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Which protocol a plaintext connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    H2c,
}

/// A stream that first yields bytes already read from it.
#[derive(Debug)]
pub struct Rewind<T> {
    prefix: Vec<u8>,
    offset: usize,
    inner: T,
}

/// Reads just enough to tell the protocol. The read is bounded by `timeout`
/// (hyper's auto-detection read has none: a silent client would hold a
/// connection slot forever). `Ok(None)`: the client went away or stalled.
pub async fn sniff<T: AsyncRead + Unpin>(
    mut io: T,
    timeout: Duration,
) -> io::Result<Option<(Protocol, Rewind<T>)>> {
    let mut prefix = Vec::with_capacity(H2_PREFACE.len());
    let read = async {
        let mut buf = [0u8; 24];
        while prefix.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&prefix) {
            let want = H2_PREFACE.len() - prefix.len();
            let n = io.read(&mut buf[..want]).await?;
            if n == 0 {
                return Ok::<bool, io::Error>(false);
            }
            prefix.extend_from_slice(&buf[..n]);
        }
        Ok(true)
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) | Err(_) => return Ok(None),
        Ok(Err(e)) => return Err(e),
    }
    let protocol = if prefix == H2_PREFACE {
        Protocol::H2c
    } else {
        Protocol::Http1
    };
    Ok(Some((
        protocol,
        Rewind {
            prefix,
            offset: 0,
            inner: io,
        },
    )))
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.offset < self.prefix.len() {
            let rest = &self.prefix[self.offset..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.offset += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
