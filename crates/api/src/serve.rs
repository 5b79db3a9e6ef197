//! Serving a router on a socket until Ctrl-C or SIGTERM.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;

/// Binds `addr` and serves `router` until Ctrl-C or SIGTERM, then stops accepting and lets
/// requests in flight finish (each is bounded by the router's request timeout).
/// With `tls`, it answers HTTPS.
pub async fn serve(addr: SocketAddr, router: Router, tls: Option<std::sync::Arc<rustls::ServerConfig>>) -> io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    match tls {
        Some(tls) => serve_tls_until(listener, router, tls, shutdown_signal()).await,
        None => serve_until(listener, router, shutdown_signal()).await,
    }
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

/// The server's certificate chain and private key (PEM files), which make it answer HTTPS.
/// Browsers give Web Crypto, the camera and service workers only to HTTPS pages.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

impl TlsFiles {
    /// The TLS settings: the chain and key from the files, HTTP/2 and HTTP/1.1 offered.
    pub fn server_config(&self) -> io::Result<std::sync::Arc<rustls::ServerConfig>> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |path: &std::path::Path, what: &str, error: &dyn std::fmt::Display| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}: {error}", path.display()))
        };
        let chain = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| bad(&self.cert, "a PEM certificate chain", &e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&self.cert, "a PEM certificate chain", &e))?;
        if chain.is_empty() {
            return Err(bad(&self.cert, "a PEM certificate chain", &"no certificate in it"));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| bad(&self.key, "a PEM private key", &e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| io::Error::other(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| bad(&self.cert, "the certificate and key do not go together", &e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(std::sync::Arc::new(config))
    }
}

/// Serves `router` over HTTPS on a bound listener until `shutdown` completes, then lets
/// requests in flight finish (at most 30 s). Requests carry their peer's address, as over HTTP.
pub async fn serve_tls_until(
    listener: TcpListener,
    router: Router,
    tls: std::sync::Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening (HTTPS)");
    let handle = axum_server::Handle::new();
    let stopping = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping.graceful_shutdown(Some(std::time::Duration::from_secs(30)));
    });
    let listener = listener.into_std()?;
    axum_server::from_tcp_rustls(listener, axum_server::tls_rustls::RustlsConfig::from_config(tls))?
        .handle(handle)
        .serve(router.into_make_service_with_connect_info::<SocketAddr>())
        .await?;
    tracing::info!("stopped");
    Ok(())
}
