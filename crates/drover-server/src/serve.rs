//! Serving bound listeners: an accept loop per listener over hyper's HTTP/1 connection, with
//! the limits `axum::serve` does not offer.
//!
//! * A cap on open connections over every listener ([`Gate`]), with a small reserve beyond it
//!   whose connections answer `GET /api/v1/health` only, once each: when clients hold every
//!   slot, an operator (or an orchestrator's probe) still learns the server is alive.
//! * Header, idle and body timeouts. hyper's own `header_read_timeout` starts when a connection
//!   begins waiting for a request, so it would also be the keep-alive timeout; [`TimedIo`]
//!   times the two apart (idle: no byte of the next request yet; headers: from its first byte),
//!   and [`DeadlineBody`] bounds the time to send a body, once a handler reads it.
//! * The request target's length and the headers' size, refused with a JSON 414 or 431 below
//!   hyper's own limits, whose answers have no body (see README, Errors).
//! * TLS, when the server has a certificate: the handshake runs in the connection's own task
//!   (a slow client never holds up the accept loop), after the connection took its slot (so
//!   handshakes count against the cap), and must end within the header timeout. The timeouts
//!   above then apply to the decrypted stream exactly as to a plain one.
//!
//! One shutdown token stops every accept loop and asks each connection to finish its request
//! in flight and close; [`serve`] returns when the last connection has.

use crate::config::HttpLimits;
use crate::error::ApiError;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, Response};
use axum::response::IntoResponse;
use futures::task::AtomicWaker;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Most header lines a request may have. Below hyper's own limit (100 lines, which it keeps on
/// the stack; a higher limit would cost every request a heap allocation) so that a request
/// with a few lines too many is refused with a JSON body; past 100, hyper refuses it itself.
pub const MAX_HEADER_LINES: usize = 64;
/// Room in hyper's read buffer, which bounds the whole request head, beyond drover's own
/// target and header limits, so that what drover refuses it refuses with a JSON body.
const HYPER_BUF_SLACK: usize = 64 * 1024;
/// The one route a reserve connection serves.
const HEALTH: &str = "/api/v1/health";

/// The connection slots shared by every listener of one server.
#[derive(Clone)]
pub struct Gate {
    general: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
}

/// A held slot; dropping it frees the slot.
// The permits are held, never read: their drop is what frees the slot.
#[allow(dead_code)]
pub enum Slot {
    General(OwnedSemaphorePermit),
    Reserve(OwnedSemaphorePermit),
}

impl Gate {
    pub fn new(limits: &HttpLimits) -> Self {
        Gate {
            general: Arc::new(Semaphore::new(limits.max_connections)),
            reserve: Arc::new(Semaphore::new(limits.connection_reserve)),
        }
    }

    /// A general slot, else a reserve one, else none (the connection is closed at once).
    pub fn admit(&self) -> Option<Slot> {
        if let Ok(p) = self.general.clone().try_acquire_owned() {
            return Some(Slot::General(p));
        }
        self.reserve
            .clone()
            .try_acquire_owned()
            .ok()
            .map(Slot::Reserve)
    }
}

/// Serves `listeners` (each with its router) until `shutdown` fires, then waits for the
/// connections still open to finish their requests and close. With `tls`, every listener
/// speaks https only.
pub async fn serve(
    listeners: Vec<(TcpListener, Router)>,
    limits: HttpLimits,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let gate = Gate::new(&limits);
    let limits = Arc::new(limits);
    let connections = TaskTracker::new();
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|(listener, router)| {
            accept_loop(
                listener,
                router,
                gate.clone(),
                limits.clone(),
                tls.clone(),
                shutdown.clone(),
                connections.clone(),
            )
        })
        .collect();
    futures::future::join_all(loops).await;
    connections.close();
    connections.wait().await;
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    gate: Gate,
    limits: Arc<HttpLimits>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    connections: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or a connection reset before it was accepted: the
                    // listener is fine; pause briefly so a lack of descriptors is not a spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = gate.admit() else {
            tracing::debug!("connection cap and reserve reached; closing a new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (router, limits, shutdown) = (router.clone(), limits.clone(), shutdown.clone());
        match tls.clone() {
            None => connections.spawn(connection(stream, router, slot, limits, shutdown)),
            Some(tls) => connections.spawn(async move {
                if let Some(stream) = handshake(&tls, stream, &limits, &shutdown).await {
                    connection(stream, router, slot, limits, shutdown).await;
                }
            }),
        };
    }
}

/// The TLS handshake of a new connection, within the header timeout: a client that connects
/// and then sends its hello slowly, or never, is closed as one that sends its headers slowly
/// would be. `None` when the handshake failed, timed out, or shutdown came first.
async fn handshake(
    tls: &TlsAcceptor,
    stream: TcpStream,
    limits: &HttpLimits,
    shutdown: &CancellationToken,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let accepted = tokio::select! {
        _ = shutdown.cancelled() => return None,
        accepted = tokio::time::timeout(limits.header_timeout, tls.accept(stream)) => accepted,
    };
    match accepted {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            // A client that does not trust the certificate ends here: its own error says why.
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake not finished within the header timeout; closing");
            None
        }
    }
}

/// Serves one connection until it closes, times out, or shutdown asks it to finish.
async fn connection<S>(
    stream: S,
    router: Router,
    slot: Slot,
    limits: Arc<HttpLimits>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let reserve = matches!(slot, Slot::Reserve(_));
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(TimedIo::new(stream, activity.clone(), &limits));
    let head_room = limits.max_uri_bytes + limits.max_header_bytes + HYPER_BUF_SLACK;
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let in_flight = InFlight::begin(activity.clone());
        let router = router.clone();
        let limits = limits.clone();
        async move {
            let _in_flight = in_flight;
            Ok::<_, std::convert::Infallible>(answer(req, router, &limits, reserve).await)
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(!reserve).max_buf_size(head_room);
    let conn = http.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = shutdown.cancelled(), if !stopping => {
                // Finish the request in flight, if any, then close.
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    drop(slot);
}

/// One request: the checks below the router, then the router.
async fn answer(
    req: Request<Incoming>,
    router: Router,
    limits: &HttpLimits,
    reserve: bool,
) -> Response<Body> {
    if reserve && req.uri().path() != HEALTH {
        return ApiError::Unavailable {
            code: "TOO_MANY_CONNECTIONS",
            message: format!(
                "the server has reached its connection limit (--max-connections); only \
                 {HEALTH} is answered on this connection; retry later"
            ),
        }
        .into_response();
    }
    if let Some(refused) = head_refusal(&req, limits) {
        return refused.into_response();
    }
    let req = req.map(|body| Body::new(DeadlineBody::new(body, limits.body_timeout)));
    match router.oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// A request target or header block over drover's limits.
fn head_refusal<B>(req: &Request<B>, limits: &HttpLimits) -> Option<ApiError> {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > limits.max_uri_bytes {
        return Some(ApiError::UriTooLong(limits.max_uri_bytes));
    }
    let lines = req.headers().len();
    let bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if lines > MAX_HEADER_LINES || bytes > limits.max_header_bytes {
        return Some(ApiError::HeadersTooLarge {
            bytes: limits.max_header_bytes,
            lines: MAX_HEADER_LINES,
        });
    }
    None
}

/// What the connection's requests are doing, shared between the service and [`TimedIo`].
#[derive(Default)]
struct Activity {
    /// Requests handed to the router and not yet answered.
    in_flight: AtomicUsize,
    /// Bumped when a request is answered: the connection starts waiting for the next one.
    answered: AtomicU64,
    /// The reader waiting while a request was in flight. hyper may not read again after an
    /// answer until the socket has data, so the end of a request wakes it to start the idle
    /// timer.
    reader: AtomicWaker,
}

/// Marks a request in flight for as long as it lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.answered.fetch_add(1, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.reader.wake();
    }
}

/// The connection's socket, timing the waits between requests: a connection with no request
/// in flight is closed when no byte of the next one arrives within the idle timeout, or when
/// its headers do not end within the header timeout of their first byte. While a request is
/// in flight the handler owns the time (the body has [`DeadlineBody`]); bytes written (a long
/// download) count as activity.
struct TimedIo<S> {
    inner: S,
    activity: Arc<Activity>,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// The `answered` count last seen.
    seen: u64,
    /// Since when the connection has waited for a request.
    idle_since: Instant,
    /// When the first byte of the request being read arrived.
    head_since: Option<Instant>,
    timer: Pin<Box<Sleep>>,
}

impl<S> TimedIo<S> {
    fn new(inner: S, activity: Arc<Activity>, limits: &HttpLimits) -> Self {
        let now = Instant::now();
        TimedIo {
            inner,
            activity,
            header_timeout: limits.header_timeout,
            idle_timeout: limits.idle_timeout,
            seen: 0,
            idle_since: now,
            head_since: None,
            timer: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
        }
    }

    /// Whether a request is in flight; a request answered since the last look restarts the
    /// wait for the next one.
    fn busy(&mut self) -> bool {
        let answered = self.activity.answered.load(Ordering::SeqCst);
        if answered != self.seen {
            self.seen = answered;
            self.idle_since = Instant::now();
            self.head_since = None;
        }
        let busy = self.activity.in_flight.load(Ordering::SeqCst) > 0;
        if busy {
            self.head_since = None;
        }
        busy
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let busy = self.busy();
        let before = buf.filled().len();
        if let Poll::Ready(read) = Pin::new(&mut self.inner).poll_read(cx, buf) {
            if !busy && buf.filled().len() > before && self.head_since.is_none() {
                self.head_since = Some(Instant::now());
            }
            return Poll::Ready(read);
        }
        self.activity.reader.register(cx.waker());
        if busy {
            return Poll::Pending;
        }
        let (deadline, what) = match self.head_since {
            Some(t) => (t + self.header_timeout, "headers"),
            None => (self.idle_since + self.idle_timeout, "idle"),
        };
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        ready!(self.timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connection closed: {what} timeout"),
        )))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.inner).poll_write(cx, data));
        if matches!(written, Ok(n) if n > 0) && !self.busy() && self.head_since.is_none() {
            self.idle_since = Instant::now();
        }
        Poll::Ready(written)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The error a request body gives when it was not sent within the body timeout; the
/// extractors answer it as 408 `BODY_TIMEOUT`.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// A request body that must end within a deadline set when its request was dispatched.
struct DeadlineBody {
    inner: Incoming,
    limit: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, limit: Duration) -> Self {
        DeadlineBody {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        ready!(self.deadline.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyTimedOut(self.limit)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_admits_the_cap_then_the_reserve_then_nothing() {
        let gate = Gate::new(&HttpLimits {
            max_connections: 2,
            connection_reserve: 1,
            ..HttpLimits::default()
        });
        let a = gate.admit();
        let b = gate.admit();
        assert!(matches!(
            (&a, &b),
            (Some(Slot::General(_)), Some(Slot::General(_)))
        ));
        let r = gate.admit();
        assert!(matches!(r, Some(Slot::Reserve(_))));
        assert!(gate.admit().is_none());
        drop(a);
        assert!(matches!(gate.admit(), Some(Slot::General(_))));
    }
}
