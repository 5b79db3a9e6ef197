//! `citypay serve`: the HTTP API over a city, with the background jobs it needs (notifications
//! and the closing of expired trades).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use citypay_api::routes::{TrustedProxies, business_routes, dashboard_pages};
use citypay_api::{Api, ApiConfig};
use citypay_checkout::notify::{DEFAULT_SCHEDULE_S, Deliver, Dispatcher};
use citypay_directory::PasswordPolicy;
use citypay_store::DbUrl;

/// Posts notifications over HTTP or HTTPS. HTTPS certificates are checked against the
/// system's trusted roots, and the PEM certificates in the file `CITYPAY_WEBHOOK_CA` when set
/// (a merchant's private CA, or a test's).
#[derive(Clone, Debug)]
pub(crate) struct HttpDeliver(Client<HttpsConnector<HttpConnector>, Full<Bytes>>);

type Bytes = hyper::body::Bytes;

impl HttpDeliver {
    pub(crate) fn new() -> anyhow::Result<HttpDeliver> {
        let mut roots = rustls::RootCertStore::empty();
        // Machines without a CA bundle still reach plain HTTP and the CAs given below.
        let (added, _ignored) = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        tracing::debug!(added, "trusted roots for notifications");
        if let Ok(path) = std::env::var("CITYPAY_WEBHOOK_CA") {
            use rustls::pki_types::pem::PemObject;
            let certificates = rustls::pki_types::CertificateDer::pem_file_iter(&path).with_context(|| format!("reading CITYPAY_WEBHOOK_CA {path}"))?;
            for certificate in certificates {
                roots.add(certificate.with_context(|| format!("{path}: a PEM certificate"))?).with_context(|| format!("{path}: a CA certificate"))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        Ok(HttpDeliver(Client::builder(TokioExecutor::new()).build(connector)))
    }
}

impl Deliver for HttpDeliver {
    fn post(&self, url: &str, headers: Vec<(&'static str, String)>, body: String) -> impl Future<Output = Result<u16, String>> + Send {
        let mut request = hyper::Request::post(url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string());
        let client = self.0.clone();
        async move {
            let sent = tokio::time::timeout(Duration::from_secs(10), client.request(request?)).await;
            let response = sent.map_err(|_| "timed out after 10 s".to_owned())?.map_err(|e| e.to_string())?;
            Ok(response.status().as_u16())
        }
    }
}

pub(crate) fn run(db: &DbUrl, addr: SocketAddr, keys: Option<PathBuf>, trusted_proxies: &str) -> anyhow::Result<()> {
    let trusted_proxies = TrustedProxies::parse(trusted_proxies).map_err(|e| anyhow::anyhow!("--trusted-proxies: {e}"))?;
    // Structured (JSON, one object per line) for log collectors; readable text on a terminal.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_target(false).with_writer(std::io::stderr);
    if terminal {
        logs.init();
    } else {
        logs.json().flatten_event(true).with_current_span(true).init();
    }

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let city = crate::city::open_from_files(db, keys.as_deref(), PasswordPolicy::PRODUCTION).await?;
        let state = city.state.clone();
        let dispatcher = Dispatcher::new(state.directory.clone(), HttpDeliver::new()?, DEFAULT_SCHEDULE_S.to_vec());
        let checkout = state.checkout.clone();
        let wallet = state.wallet.clone();
        tokio::spawn(async move {
            let mut tick = 0u64;
            loop {
                tick += 1;
                if tick % 60 == 0
                    && let Err(error) = wallet.finish_interrupted(200).await
                {
                    tracing::warn!(%error, "finishing interrupted top-ups and withdrawals failed");
                }
                match dispatcher.run_once(200).await {
                    Ok(report) => count_notifications(&report),
                    Err(error) => tracing::warn!(%error, "notification dispatch failed"),
                }
                if let Err(error) = checkout.close_expired(500).await {
                    tracing::warn!(%error, "closing expired trades failed");
                }
                if let Err(error) = checkout.finish_ended(500).await {
                    tracing::warn!(%error, "finishing trades past their refund period failed");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        reload_ride_keys_on_hangup(state.transit.clone(), keys.clone().unwrap_or_else(|| crate::city::default_keys_path(db)));
        let api = Api::new(ApiConfig::new(env!("CARGO_PKG_VERSION")))?.routes(business_routes(state.clone())).pages(dashboard_pages(state));
        eprintln!("citypay serving {} on http://{addr} (OpenAPI at /openapi.json, the dashboard at /dashboard)", db.redacted());
        citypay_api::serve(addr, api.into_router().layer(trusted_proxies.extension())).await?;
        city.shard.shutdown();
        anyhow::Ok(())
    })
}

/// Logs each failed notification (never its URL, which can carry a token) and counts every
/// outcome in `citypay_notifications_total{outcome}`: delivered, retried, given_up, skipped.
fn count_notifications(report: &citypay_checkout::notify::DispatchReport) {
    for failure in &report.failures {
        match failure.retry_in_s {
            Some(retry_in_s) => tracing::warn!(
                merchant = failure.merchant, event_id = %failure.event_id, attempt = failure.attempt, reason = %failure.reason, retry_in_s,
                "notification delivery failed; retrying"
            ),
            None => tracing::warn!(
                merchant = failure.merchant, event_id = %failure.event_id, attempt = failure.attempt, reason = %failure.reason,
                "notification delivery failed; given up"
            ),
        }
    }
    for (outcome, count) in [("delivered", report.delivered), ("retried", report.retried), ("given_up", report.given_up), ("skipped", report.skipped)] {
        if count > 0 {
            metrics::counter!("citypay_notifications_total", "outcome" => outcome).increment(u64::try_from(count).unwrap_or(u64::MAX));
        }
    }
}

/// On SIGHUP, reads the ride keys again from the key file (after `citypay transit rotate-key`
/// or `revoke-key`): the new key signs from the next credential, and validators get the new
/// set and revocations at their next download. A file that cannot be read, or that leaves no
/// key able to sign, leaves the old keys (and is logged).
fn reload_ride_keys_on_hangup(transit: citypay_transit::Transit, path: PathBuf) {
    tokio::spawn(async move {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("no SIGHUP handler: ride keys reload only on restart");
            return;
        };
        while hangups.recv().await.is_some() {
            let now = u32::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())).unwrap_or(u32::MAX);
            match crate::city::reload_ride_keys(&path, now) {
                Ok((keys, revoked)) => {
                    let key_ids: Vec<u16> = keys.iter().map(citypay_ride::PlatformKey::key_id).collect();
                    tracing::info!(?key_ids, ?revoked, "ride keys reloaded");
                    transit.set_keys(keys, revoked);
                }
                Err(error) => tracing::warn!(%error, "reloading the ride keys failed; the previous keys stay"),
            }
        }
    });
}
