//! The gateway's own HTTP/1.1 server side, for requests of the common
//! shape (HTTP/1.1, no body, no upgrade: [`codec::parse_request`]). The
//! connection's task reads a head, has the listener's handler answer it,
//! writes the response and reads the next head: no dispatcher between the
//! socket and the handler, no second pass over the response's fields.
//!
//! At the first request of any other shape the connection is handed, with
//! the bytes read so far, to hyper's server, which serves it from that
//! request on; so whatever hyper refuses (a malformed head, a head too
//! large, ambiguous framing) is still refused by hyper, and bodies,
//! `Expect: 100-continue` and upgrades are hyper's as before.
//!
//! Adapter: depends on tokio and [`codec`].

mod codec;

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;

use bytes::{BufMut as _, BytesMut};
use http::Method;
use http_body::Body as _;
use http_body_util::BodyExt as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use self::codec::{Framing, Parsed, Scratch};
use super::io::{Activity, Expired, Gate};
use super::{ClientBody, Handler, Peer};
use crate::reply::Reply;

/// The read buffer's first size (hyper's too).
const INITIAL_BUFFER: usize = 8192;

/// How the connection's own loop ended.
#[derive(Debug)]
pub(super) enum Ended {
    /// The connection is done: closed by either side, timed out, drained,
    /// or broken.
    Closed,
    /// A request hyper serves: these are the bytes read and not yet
    /// served, from its first byte on.
    Handoff(Vec<u8>),
}

/// What the loop needs besides the stream: who is asking, who answers,
/// and the connection's limits and signals.
pub(super) struct Serving<'a, H, W, S> {
    pub peer: &'a Peer,
    pub handler: &'a H,
    pub activity: &'a Arc<Activity>,
    /// The most bytes a head may take (hyper's `max_buf_size`): a longer
    /// one is hyper's to refuse (431).
    pub max_head: usize,
    /// The connection's idle and header read deadline.
    pub watch: Pin<&'a mut W>,
    /// The drain has begun.
    pub stopped: Pin<&'a mut S>,
}

/// Serves requests on `io` until the connection ends or a request of
/// another shape comes.
pub(super) async fn serve<T, H, W, S>(io: &mut T, mut serving: Serving<'_, H, W, S>) -> Ended
where
    T: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
    W: Future<Output = Expired>,
    S: Future<Output = ()>,
{
    let mut buf = BytesMut::with_capacity(INITIAL_BUFFER);
    let mut out = Vec::new();
    let mut scratch = Scratch::default();
    // The client's side is read during an answer only when it woke.
    let mut client = Gate::default();
    loop {
        // 1. A whole head, within the deadline; the drain closes an idle
        //    connection.
        // The buffer's length when it last held a partial head.
        let mut partial = None;
        let (head, keep_alive) = loop {
            let may_be_whole = partial.is_none_or(|known| codec::may_end_head(&buf, known));
            if !buf.is_empty() && may_be_whole {
                match codec::parse_request(&mut buf, &mut scratch) {
                    Parsed::Request { head, keep_alive } => break (head, keep_alive),
                    Parsed::NotOurs => return Ended::Handoff(buf.to_vec()),
                    Parsed::Partial => partial = Some(buf.len()),
                }
            }
            let room = serving.max_head.saturating_sub(buf.len());
            if room == 0 {
                return Ended::Handoff(buf.to_vec());
            }
            if buf.capacity() - buf.len() < 1024 {
                // Takes back the allocation the last head was split off
                // when nothing holds a piece of it any more.
                buf.reserve(INITIAL_BUFFER);
            }
            let mut limited = (&mut buf).limit(room);
            let read = tokio::select! {
                biased;
                () = serving.stopped.as_mut() => return close(io, serving.watch).await,
                expired = serving.watch.as_mut() => {
                    tracing::debug!(peer = %serving.peer.addr, "connection closed: {expired:?} timeout");
                    return Ended::Closed;
                }
                read = io.read_buf(&mut limited) => read,
            };
            match read {
                Ok(0) => return close(io, serving.watch).await,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(peer = %serving.peer.addr, "read failed: {e}");
                    return Ended::Closed;
                }
            }
        };

        // 2. The answer, in this task. As hyper's server does, a client
        //    that closes its side meanwhile ends the exchange; bytes of a
        //    next request are kept for after the answer.
        let busy = serving.activity.busy();
        let method = head.method().clone();
        let request = head.map(|()| ClientBody::Empty);
        let response = {
            let mut answer = pin!(serving.handler.handle(serving.peer.clone(), request));
            client.open();
            loop {
                let gone = std::future::poll_fn(|cx| {
                    if !buf.is_empty() {
                        // A next request is in: nothing more is read now.
                        return Poll::Pending;
                    }
                    // `Ok(false)`: the client closed its side.
                    client.poll(cx, |cx| {
                        pin!(io.read_buf(&mut buf)).poll(cx).map_ok(|n| n > 0)
                    })
                });
                tokio::select! {
                    biased;
                    response = answer.as_mut() => break response,
                    read = gone => match read {
                        Ok(false) | Err(_) => {
                            tracing::debug!(peer = %serving.peer.addr, "client went away mid-request");
                            return Ended::Closed;
                        }
                        Ok(true) => {}
                    },
                }
            }
        };

        // 3. The response; then the next head, or the end. Once the drain
        //    has begun, the response says `Connection: close` (as hyper's).
        let draining =
            std::future::poll_fn(|cx| Poll::Ready(serving.stopped.as_mut().poll(cx).is_ready()))
                .await;
        let keep_alive = keep_alive && !draining;
        let written = write_response(io, &mut out, response, &method, keep_alive);
        let open = match written.await {
            Ok((open, headers)) => {
                scratch.recycle(headers);
                open
            }
            Err(e) => {
                tracing::debug!(peer = %serving.peer.addr, "response not sent whole: {e}");
                return Ended::Closed;
            }
        };
        drop(busy);
        if !open {
            return close(io, serving.watch).await;
        }
    }
}

/// Ends the connection in order (a TLS stream sends its `close_notify`),
/// unless the client stops reading for the idle timeout.
async fn close<T: AsyncWrite + Unpin, W: Future<Output = Expired>>(
    io: &mut T,
    watch: Pin<&mut W>,
) -> Ended {
    tokio::select! {
        _ = io.shutdown() => {}
        _ = watch => {}
    }
    Ended::Closed
}

/// Writes `response` framed as hyper's server frames it. A body that is
/// ready with its first piece goes out in one write with the head; the
/// stream is flushed whenever the body makes it wait. `Ok(false)`: the
/// connection closes after it (the client or the response asked to, or
/// the body ran to the close). The response's header map comes back, for
/// the next request's fields.
async fn write_response<T: AsyncWrite + Unpin>(
    io: &mut T,
    out: &mut Vec<u8>,
    reply: Reply,
    method: &Method,
    keep_alive: bool,
) -> io::Result<(bool, http::HeaderMap)> {
    let (response, lines) = reply.into_parts();
    let (parts, mut body) = response.into_parts();
    let length = if body.is_end_stream() {
        None
    } else {
        Some(body.size_hint().exact())
    };
    out.clear();
    let encoded =
        codec::encode_response(&parts, lines.as_ref(), length, method, keep_alive, out)
            .map_err(|_| io::Error::other("the response's framing fields cannot be written"))?;
    drop(lines);
    // Emptied now: its values may hold on to the upstream's read buffer.
    let mut headers = parts.headers;
    if !headers.is_empty() {
        headers.clear();
    }
    let framing = encoded.framing;
    // What a `Content-Length` body still owes.
    let mut owed = match framing {
        Framing::Length(n) => n,
        Framing::Chunked | Framing::CloseDelimited => 0,
    };
    // Nothing to send (a HEAD's answer, a 304): the body is not read.
    let mut reading = framing != Framing::Length(0);
    while reading {
        let polled =
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        let frame = match polled {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                // The body waits: what is written so far goes out now.
                write_all(io, &mut [IoSlice::new(out)]).await?;
                out.clear();
                io.flush().await?;
                body.frame().await
            }
        };
        let Some(frame) = frame.transpose().map_err(io::Error::other)? else {
            // The body ended.
            match framing {
                Framing::Length(_) => {
                    return Err(io::Error::other("the body ended short of its length"));
                }
                Framing::Chunked => out.extend_from_slice(crate::http1::LAST_CHUNK),
                Framing::CloseDelimited => {}
            }
            break;
        };
        // Trailers are never forwarded (`Trailer` is hop-by-hop here).
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if framing == Framing::Chunked {
            crate::http1::chunk_line(data.len(), out);
            let slices = &mut [
                IoSlice::new(out),
                IoSlice::new(&data),
                IoSlice::new(b"\r\n"),
            ];
            write_all(io, slices).await?;
        } else {
            if let Framing::Length(_) = framing {
                owed = owed
                    .checked_sub(data.len() as u64)
                    .ok_or_else(|| io::Error::other("the body is longer than its length"))?;
                // Whole: the body is not read further (as hyper).
                reading = owed > 0;
            }
            write_all(io, &mut [IoSlice::new(out), IoSlice::new(&data)]).await?;
        }
        out.clear();
    }
    write_all(io, &mut [IoSlice::new(out)]).await?;
    io.flush().await?;
    Ok((!encoded.last && framing != Framing::CloseDelimited, headers))
}

/// Writes every byte of `slices`, vectored where the stream can.
async fn write_all<T: AsyncWrite + Unpin>(
    io: &mut T,
    mut slices: &mut [IoSlice<'_>],
) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let n = io.write_vectored(slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Response, StatusCode, Version};
    use http_body_util::{BodyExt as _, StreamBody};
    use hyper::body::Frame;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};

    use super::*;
    use crate::Body;
    use crate::reply::Lines;

    #[derive(Clone, Copy, Debug)]
    enum Shape {
        Empty,
        Full(&'static str),
        /// Pieces of an unknown total length.
        Stream(&'static [&'static str]),
    }

    #[derive(Clone, Copy, Debug)]
    struct Case {
        head: bool,
        close: bool,
        status: u16,
        version: Version,
        reason: Option<&'static str>,
        fields: &'static [(&'static str, &'static str)],
        body: Shape,
    }

    const OK: Case = Case {
        head: false,
        close: false,
        status: 200,
        version: Version::HTTP_11,
        reason: None,
        fields: &[],
        body: Shape::Full("hello"),
    };

    fn response(case: Case) -> Response<Body> {
        let body = match case.body {
            Shape::Empty => crate::full(""),
            Shape::Full(text) => crate::full(text),
            Shape::Stream(pieces) => {
                StreamBody::new(futures_util::stream::iter(pieces.iter().map(|p| {
                    Ok::<_, crate::BoxError>(Frame::data(Bytes::from_static(p.as_bytes())))
                })))
                .boxed()
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::from_u16(case.status).expect("status");
        *response.version_mut() = case.version;
        for (name, value) in case.fields {
            response
                .headers_mut()
                .append(*name, value.parse().expect("value"));
        }
        if let Some(reason) = case.reason {
            response
                .extensions_mut()
                .insert(hyper::ext::ReasonPhrase::from_static(reason.as_bytes()));
        }
        response
    }

    /// What the client reads, the `Date` value blanked, and whether the
    /// connection was closed after it (or left open, idle).
    async fn read(mut client: DuplexStream) -> (String, bool) {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let closed = loop {
            match tokio::time::timeout(Duration::from_millis(100), client.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break true,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(_) => break false,
            }
        };
        let text = String::from_utf8(got).expect("text");
        let blanked = match text.find("\r\ndate: ") {
            Some(at) => {
                let end = at + 2 + text[at + 2..].find("\r\n").expect("line end");
                format!("{}\r\ndate: -{}", &text[..at], &text[end..])
            }
            None => text,
        };
        (blanked, closed)
    }

    async fn by_hyper(case: Case) -> (String, bool) {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let service =
            hyper::service::service_fn(move |_| async move { Ok::<_, Infallible>(response(case)) });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(server), service),
        );
        let method = if case.head { "HEAD" } else { "GET" };
        let close = if case.close {
            "connection: close\r\n"
        } else {
            ""
        };
        let request = format!("{method} / HTTP/1.1\r\nhost: a\r\n{close}\r\n");
        client.write_all(request.as_bytes()).await.expect("write");
        read(client).await
    }

    /// The response written by the gateway's writer: from its map, or
    /// (`lines`) as an upstream's answer whose fields are still lines.
    async fn by_us(case: Case, lines: bool) -> (String, bool) {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let method = if case.head { Method::HEAD } else { Method::GET };
        let mut out = Vec::new();
        let reply = if lines {
            let mut lines = Lines::default();
            for (name, value) in case.fields {
                lines.push(name.as_bytes(), value.as_bytes());
            }
            let mut response = response(case);
            response.headers_mut().clear();
            Reply::upstream(response, lines)
        } else {
            response(case).into()
        };
        let written = write_response(&mut server, &mut out, reply, &method, !case.close);
        let open = written.await.is_ok_and(|(open, _)| open);
        let kept = open.then_some(server);
        let read = read(client).await;
        drop(kept);
        read
    }

    /// The response writer against hyper's own server, byte for byte,
    /// over the shapes of response a handler can give.
    #[tokio::test]
    async fn responses_are_written_as_hyper_writes_them() {
        let cases = [
            OK,
            Case {
                fields: &[("content-length", "5"), ("x-a", "1"), ("X-A", "2")],
                ..OK
            },
            Case {
                status: 404,
                reason: Some("Nope Indeed"),
                body: Shape::Full("x"),
                ..OK
            },
            Case {
                status: 503,
                fields: &[("content-type", "application/json")],
                ..OK
            },
            Case {
                status: 204,
                fields: &[("content-length", "0")],
                body: Shape::Empty,
                ..OK
            },
            Case {
                status: 304,
                fields: &[("etag", "\"1\"")],
                body: Shape::Empty,
                ..OK
            },
            Case {
                head: true,
                fields: &[("content-length", "10")],
                body: Shape::Empty,
                ..OK
            },
            Case { head: true, ..OK },
            Case {
                body: Shape::Stream(&["ab", "", "cde"]),
                ..OK
            },
            Case {
                body: Shape::Stream(&["ab", "cde"]),
                fields: &[("content-length", "5")],
                ..OK
            },
            Case {
                version: Version::HTTP_10,
                body: Shape::Stream(&["ab", "c"]),
                ..OK
            },
            Case {
                version: Version::HTTP_10,
                ..OK
            },
            Case {
                fields: &[("connection", "close")],
                ..OK
            },
            Case {
                fields: &[("connection", "a"), ("connection", "b")],
                ..OK
            },
            Case { close: true, ..OK },
            Case {
                close: true,
                fields: &[("connection", "a"), ("x", "1")],
                ..OK
            },
            Case {
                close: true,
                fields: &[("connection", "Close")],
                ..OK
            },
            Case {
                close: true,
                head: true,
                body: Shape::Stream(&["ab"]),
                ..OK
            },
            Case {
                close: true,
                body: Shape::Stream(&["ab", "c"]),
                ..OK
            },
            Case {
                close: true,
                version: Version::HTTP_10,
                ..OK
            },
            Case {
                head: true,
                body: Shape::Stream(&["ab"]),
                ..OK
            },
            Case {
                status: 304,
                fields: &[("content-length", "10")],
                body: Shape::Empty,
                ..OK
            },
            Case {
                status: 204,
                body: Shape::Stream(&["ab"]),
                ..OK
            },
            Case {
                fields: &[("date", "Mon, 01 Jan 2024 00:00:00 GMT")],
                ..OK
            },
            Case {
                fields: &[("transfer-encoding", "gzip")],
                body: Shape::Stream(&["z"]),
                ..OK
            },
            Case {
                fields: &[("content-length", "7")],
                body: Shape::Empty,
                ..OK
            },
            Case {
                body: Shape::Full(""),
                ..OK
            },
            Case { status: 103, ..OK },
            Case {
                fields: &[("content-length", "5"), ("content-length", "6")],
                body: Shape::Stream(&["ab"]),
                ..OK
            },
            Case {
                fields: &[("content-length", "x")],
                body: Shape::Stream(&["ab"]),
                ..OK
            },
        ];
        for case in cases {
            let hyper = by_hyper(case).await;
            assert_eq!(by_us(case, false).await, hyper, "{case:?}");
            // An upstream's lines never repeat a name.
            let repeats = case.fields.iter().enumerate().any(|(at, (name, _))| {
                case.fields[at + 1..]
                    .iter()
                    .any(|(other, _)| other.eq_ignore_ascii_case(name))
            });
            if !repeats {
                assert_eq!(by_us(case, true).await, hyper, "from lines: {case:?}");
            }
        }
    }
}
