//! The listener, the router with its layer stack (request ids, tracing, body limit and deadline,
//! `nosniff` on every response), and the accept loop (header deadline, connection cap, graceful
//! shutdown).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::timeout::RequestBodyDeadlineLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::app::AppState;
use crate::http::extract::{BodyDeadline, BodyLimit};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole application as one router: routes, state and layers.
pub fn build_router(state: AppState) -> Router {
    let max_body = state.config().http.max_body;
    let body_timeout = Duration::from_secs(state.config().http.body_timeout_s);
    let layers = ServiceBuilder::new()
        .map_request(drop_unfit_request_id)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO))
                .on_failure(DefaultOnFailure::new().level(Level::WARN)),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(axum::Extension(BodyLimit(max_body)))
        .layer(axum::Extension(BodyDeadline(body_timeout.as_secs())))
        .layer(RequestBodyDeadlineLayer::new(body_timeout))
        .layer(DefaultBodyLimit::max(max_body));
    crate::http::router()
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::http::replica::replay_writes))
        .layer(axum::middleware::from_fn(crate::http::metrics::track_http))
        .layer(layers)
        // Outermost, so every answer has it: errors, fallbacks, rejections and SSE included.
        .layer(axum::middleware::map_response(nosniff))
        .with_state(state)
}

/// Marks a response `X-Content-Type-Options: nosniff`, so a browser never guesses another type
/// for it (a JSON error or an event log rendered as HTML); Durable Streams asks it of every
/// response.
async fn nosniff(mut response: Response) -> Response {
    response.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// The longest `X-Request-Id` a client may choose.
const MAX_REQUEST_ID: usize = 128;

/// Whether a client's `X-Request-Id` may be kept (and logged, and echoed): 1 to 128 characters
/// of letters, digits and `-_.:`. Anything else is dropped and a fresh id made, so a client can
/// neither forge log lines (newlines, quotes) nor bloat them.
fn fit_request_id(value: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&value.len())
        && value.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn drop_unfit_request_id<B>(mut request: axum::http::Request<B>) -> axum::http::Request<B> {
    let unfit = request.headers().get_all(&REQUEST_ID).iter().count() > 1
        || request.headers().get(&REQUEST_ID).is_some_and(|v| !fit_request_id(v.as_bytes()));
    if unfit {
        request.headers_mut().remove(&REQUEST_ID);
    }
    request
}

fn request_span(request: &Request) -> tracing::Span {
    let id =
        request.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok()).unwrap_or("-");
    tracing::info_span!(
        "request",
        request.id = %id,
        http.method = %request.method(),
        http.path = %request.uri().path(),
    )
}

/// Listens on `host:port`. `::` (the default) is dual-stack: IPv6 and, as IPv4-mapped
/// addresses, IPv4 too, whatever the system's default for `IPV6_V6ONLY` (Fly's private
/// `.internal` network is IPv6; health checks and local clients may use IPv4). On a host without
/// IPv6, where `::` cannot be bound, it listens on `0.0.0.0` instead and warns.
///
/// # Errors
/// When the address cannot be bound (in use, not allowed, not an address of this host).
pub fn bind(host: IpAddr, port: u16) -> io::Result<TcpListener> {
    let addr = SocketAddr::new(host, port);
    match listen(addr) {
        Err(e) if host == IpAddr::V6(Ipv6Addr::UNSPECIFIED) && !a_port_problem(&e) => {
            let fallback = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
            tracing::warn!(
                error = %e,
                addr = %fallback,
                "cannot listen on [::] (is IPv6 disabled on this host?): listening on IPv4 only"
            );
            listen(fallback)
                .map_err(|e2| io::Error::new(e2.kind(), format!("{e2} (on {fallback}; on {addr}: {e})")))
        }
        result => result,
    }
}

/// Whether a bind failed for the port itself (taken, or privileged), which no other address of
/// the same port would fix.
fn a_port_problem(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied)
}

/// A listening socket as `tokio::net::TcpListener::bind` makes one (`SO_REUSEADDR` on Unix, a
/// backlog of 128), with `IPV6_V6ONLY` off on an IPv6 address.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    TcpListener::from_std(socket.into())
}

/// What one client connection may hold: the header-read deadline, the body deadline (a layer,
/// see [`build_router`]) and how many connections may be open at once.
#[derive(Debug, Clone, Copy)]
struct ConnLimits {
    header_timeout: Duration,
    max_connections: usize,
}

/// Serves until `shutdown` is cancelled, then lets in-flight requests finish for up to `grace`.
///
/// hearth runs its own accept loop over hyper (HTTP/1.1) rather than `axum::serve`, for what
/// that does not offer: a header-read deadline (which also closes idle keep-alive connections)
/// and a cap on open connections — past it, new connections wait in the listen backlog until
/// one closes. TLS and HTTP/2 end at the proxy in front (Fly's speaks HTTP/1.1 to the app).
///
/// # Errors
/// When the listener fails.
pub async fn serve(listener: TcpListener, state: AppState, grace: Duration) -> std::io::Result<()> {
    let http = &state.config().http;
    let limits = ConnLimits {
        header_timeout: Duration::from_secs(http.header_timeout_s),
        max_connections: usize::try_from(http.max_connections).unwrap_or(usize::MAX),
    };
    let shutdown = state.shutdown().clone();
    let router = build_router(state);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut warned_full = false;
    loop {
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if !warned_full {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection cap reached (HEARTH_MAX_CONNECTIONS): new connections wait"
                    );
                    warned_full = true;
                }
                tokio::select! {
                    permit = Arc::clone(&permits).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        if permits.available_permits() > limits.max_connections / 2 {
            warned_full = false;
        }
        // Small responses must not wait on Nagle's algorithm and the peer's delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let service = router.clone().map_request(move |request: axum::http::Request<Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(ConnectInfo(remote));
            request
        });
        let conn = builder.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        connections.spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(
        grace_s = grace.as_secs(),
        "shutting down: no new connections; waiting for in-flight requests"
    );
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(grace_s = grace.as_secs(), "grace period over: closing the remaining connections");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::fit_request_id;

    #[test]
    fn only_plain_short_request_ids_are_kept() {
        assert!(fit_request_id(b"req-123_abc.def:9"));
        assert!(fit_request_id(b"0192f1a2-7c3b-7d4e-8f00-123456789abc"));
        assert!(!fit_request_id(b""));
        assert!(!fit_request_id(b"a\nfake log line"));
        assert!(!fit_request_id(b"a\"b"));
        assert!(!fit_request_id(b"with space"));
        assert!(!fit_request_id("caf\u{e9}".as_bytes()));
        assert!(!fit_request_id(&[b'a'; 129]));
        assert!(fit_request_id(&[b'a'; 128]));
    }
}
