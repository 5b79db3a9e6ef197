//! Serving a router on a socket until Ctrl-C or SIGTERM.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;

/// Binds `addr` and serves `router` until Ctrl-C or SIGTERM, then stops accepting and lets
/// requests in flight finish (each is bounded by the router's request timeout).
pub async fn serve(addr: SocketAddr, router: Router) -> io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    serve_until(listener, router, shutdown_signal()).await
}

/// Serves `router` on a bound listener until `shutdown` completes, then drains gracefully.
/// Each request carries its peer's address (`ConnectInfo`), which the sign-in limits count.
pub async fn serve_until(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "listening");
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on Ctrl-C, or on SIGTERM where there are Unix signals.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        () = sigterm() => tracing::info!("SIGTERM: shutting down"),
    }
}

#[cfg(unix)]
async fn sigterm() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut stream) => {
            stream.recv().await;
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(not(unix))]
async fn sigterm() {
    std::future::pending::<()>().await;
}
