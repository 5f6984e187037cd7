//! The listener, the router with its layer stack (request ids, tracing, body limit, `nosniff`
//! on every response), and serving with graceful shutdown.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;
use axum::serve::ListenerExt;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::app::AppState;
use crate::http::extract::BodyLimit;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole application as one router: routes, state and layers.
pub fn build_router(state: AppState) -> Router {
    let max_body = state.config().http.max_body;
    let layers = ServiceBuilder::new()
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
        .layer(DefaultBodyLimit::max(max_body));
    crate::http::router()
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

/// Serves until `shutdown` is cancelled, then lets in-flight requests finish for up to `grace`.
///
/// # Errors
/// When the listener fails.
pub async fn serve(listener: TcpListener, state: AppState, grace: Duration) -> std::io::Result<()> {
    let shutdown = state.shutdown().clone();
    let router = build_router(state);
    let stop = shutdown.clone();
    // Small responses must not wait on Nagle's algorithm and the peer's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    // The peer address reaches handlers as `ConnectInfo` (the admin login's per-client limit).
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, service).with_graceful_shutdown(async move { stop.cancelled().await });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        result = &mut server => return result,
        () = shutdown.cancelled() => {}
    }
    tracing::info!(
        grace_s = grace.as_secs(),
        "shutting down: no new connections; waiting for in-flight requests"
    );
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(grace_s = grace.as_secs(), "grace period over: closing the remaining connections");
            Ok(())
        }
    }
}
