//! What hyper reads and writes, watched: the client's socket ([`TrackedIo`]), which
//! tells the connection's state what arrived and writes problem+json in place of hyper's
//! own empty error answers, and the bodies ([`Tracked`]), which tell it when an exchange
//! is over.
use super::state::Conn;
use super::Connections;
use axum::body::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use tenantd_core::Code;
use tenantd_edge::Problem;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The problem+json answer to a head hyper refused with `status`.
fn refusal(status: u16) -> Option<Vec<u8>> {
    let (code, reason, detail) = match status {
        400 => (
            Code::InvalidRequest,
            "Bad Request",
            "the request is not valid HTTP/1.1: its request line or a header is malformed",
        ),
        414 => (
            Code::UriTooLong,
            "URI Too Long",
            "the request target is too long (at most 65,533 bytes)",
        ),
        431 => (
            Code::HeadersTooLarge,
            "Request Header Fields Too Large",
            "the request head is too large (about 64 KiB at most) or has more than 100 headers",
        ),
        505 => (
            Code::HttpVersionNotSupported,
            "HTTP Version Not Supported",
            "this listener speaks HTTP/1.0 and HTTP/1.1",
        ),
        _ => return None,
    };
    let request_id = tenantd_edge::layer::new_request_id();
    tracing::info!(request_id = %request_id, status, "request refused by the HTTP layer");
    let body = serde_json::to_vec(&Problem::new(code, detail).body(&request_id)).ok()?;
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nx-request-id: {request_id}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

/// The status of an HTTP/1 response head at the start of `buf`, if it is one.
fn status_of(buf: &[u8]) -> Option<u16> {
    let rest = buf.strip_prefix(b"HTTP/1.")?;
    std::str::from_utf8(rest.get(2..5)?).ok()?.parse().ok()
}

/// The client's socket as hyper sees it: reads tell the connection's state what
/// arrived; a write of hyper's own error answer is replaced with problem+json.
pub struct TrackedIo<T> {
    inner: T,
    conn: Arc<Conn>,
    all: Arc<Connections>,
    /// The problem+json answer being written in place of hyper's, and how far.
    replacing: Option<(Vec<u8>, usize)>,
    /// Hyper's answer was replaced: the rest of what it writes is dropped.
    replaced: bool,
}

impl<T> TrackedIo<T> {
    pub(super) fn new(inner: T, conn: Arc<Conn>, all: Arc<Connections>) -> Self {
        Self {
            inner,
            conn,
            all,
            replacing: None,
            replaced: false,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.conn.read(&buf.filled()[before..]);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> TrackedIo<T> {
    /// Writes what replaces hyper's answer; `Ready(Ok)` once all of it is written.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, at)) = self.replacing.as_mut() {
            if *at == bytes.len() {
                self.replacing = None;
                self.replaced = true;
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*at..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *at += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Whether `first` (the start of a write) is hyper's own error answer, which is then
    /// replaced: `Some(())` once the replacement is written.
    fn poll_intercept(&mut self, cx: &mut Context<'_>, first: &[u8]) -> Poll<io::Result<bool>> {
        if self.replaced {
            return Poll::Ready(Ok(true));
        }
        if self.replacing.is_none() {
            let ours = status_of(first).filter(|_| self.conn.refusing()).and_then(refusal);
            match ours {
                Some(bytes) => {
                    self.all.metrics.refused_heads.fetch_add(1, Ordering::Relaxed);
                    self.replacing = Some((bytes, 0));
                }
                None => return Poll::Ready(Ok(false)),
            }
        }
        self.poll_replacement(cx).map_ok(|()| true)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.poll_intercept(cx, buf) {
            Poll::Ready(Ok(true)) => Poll::Ready(Ok(buf.len())),
            Poll::Ready(Ok(false)) => Pin::new(&mut self.inner).poll_write(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
        match self.poll_intercept(cx, first) {
            Poll::Ready(Ok(true)) => Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum())),
            Poll::Ready(Ok(false)) => Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_replacement(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_replacement(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

/// Which end of an exchange a [`Tracked`] body is.
#[derive(Clone, Copy)]
pub(super) enum Side {
    Request,
    Response,
}

/// A body that tells its connection when it ends (or is dropped).
pub(super) struct Tracked<B> {
    inner: B,
    conn: Arc<Conn>,
    side: Side,
    ended: bool,
}

impl<B> Tracked<B> {
    pub(super) fn new(inner: B, conn: Arc<Conn>, side: Side) -> Self
    where
        B: HttpBody,
    {
        let mut t = Self {
            inner,
            conn,
            side,
            ended: false,
        };
        // A request without a body (most GETs) is read whole from the start.
        if matches!(side, Side::Request) && t.inner.is_end_stream() {
            t.end(true);
        }
        t
    }

    fn end(&mut self, whole: bool) {
        if !std::mem::replace(&mut self.ended, true) {
            match self.side {
                Side::Request => self.conn.request_ended(whole),
                Side::Response => self.conn.response_ended(),
            }
        }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.end(false);
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = r {
            self.end(true);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
