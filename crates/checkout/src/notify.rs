//! Delivering the outbox: every trade change is an event in the outbox, written in the same
//! transaction as the change; after commit a dispatcher posts it to the merchant's URL, signed,
//! and retries with back-off until a 2xx answer (the receiver deduplicates by event id).
//!
//! Signature header: `Citypay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//! `"<t>.<body>"` with the merchant's webhook secret; `Citypay-Event-Id` carries the event id.
//!
//! A gateway trade's changes are also events of their own ([`ALIPAY_NOTIFICATION`]), delivered
//! to the trade's `notify_url` as Alipay's `trade_status_sync` form post, signed with the
//! platform key of the trade's app at each attempt, and delivered only when the body answered
//! is `success`. The event id is the `notify_id`, the same on every retry.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use citypay_directory::{Directory, DirectoryError};
use citypay_gateway::PlatformKeys;
use citypay_gateway::money::yuan;
use citypay_shard::{Command, Guard};
use citypay_store::{OnConflict, ServiceRow, Value};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::{GatewayNotify, Trade, TradeStatus};

/// The outbox kind of a gateway trade's Alipay-form notification.
pub const ALIPAY_NOTIFICATION: &str = "alipay.trade_status_sync";

/// What an endpoint answered: the status and the start of the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answered {
    /// The HTTP status.
    pub status: u16,
    /// The start of the body (up to 64 characters), as text: enough for Alipay's `success`.
    pub body: String,
}

/// Posts one notification; what was answered, or why no answer came.
pub trait Deliver: Send + Sync {
    /// POSTs `body` with `headers` to `url`.
    fn post(&self, url: &str, headers: Vec<(&'static str, String)>, body: String) -> impl Future<Output = Result<Answered, String>> + Send;
}

/// Seconds to wait after each failed attempt: Alipay's notify schedule (4 m, 10 m, 10 m, 1 h,
/// 2 h, 6 h, 15 h: eight notifications over about 25 hours); after the last one the event is
/// given up (left undelivered, not retried).
pub const DEFAULT_SCHEDULE_S: &[u64] = &[240, 600, 600, 3_600, 7_200, 21_600, 54_000];

/// Whether a notification may be sent to `ip`: not loopback, private, link-local, shared
/// (CGNAT), unspecified, multicast or documentation space, in IPv4 or IPv6 (mapped addresses
/// included). A notification URL makes the server call an address of the merchant's choosing,
/// and Patroni's REST API and etcd listen on such addresses; an operator can allow them
/// (`CITYPAY_ALLOW_PRIVATE_NOTIFY=1` for `citypay serve`, as tests do).
pub fn public_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public_address(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

/// A notification URL as logs show it: scheme, host and port. The rest stays out: a query
/// (`?token=`), a path (webhook addresses whose path is the secret) or a user part
/// (`user:password@`) can carry the merchant's credentials.
pub fn endpoint(url: &str) -> String {
    let (scheme, _, host, _) = url_parts(url);
    format!("{scheme}://{host}")
}

/// `url` without its user part (`user:password@`). HTTP clients send none as credentials,
/// and hyper's connection pool logs the host with it at debug level.
pub fn without_user_part(url: &str) -> std::borrow::Cow<'_, str> {
    match url_parts(url) {
        (scheme, Some(_), host, rest) => format!("{scheme}://{host}{rest}").into(),
        _ => url.into(),
    }
}

/// A URL's scheme (`?` when it has none), user part, host with port, and the rest.
fn url_parts(url: &str) -> (&str, Option<&str>, &str, &str) {
    let (scheme, after) = url.split_once("://").unwrap_or(("?", ""));
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    match authority.rsplit_once('@') {
        Some((user, host)) => (scheme, Some(user), host, rest),
        None => (scheme, None, authority, rest),
    }
}

/// The outbox body of a gateway trade's change: the app, the URL and the notification's
/// fields but `notify_id`, `notify_time` and the signature, which each attempt adds.
pub(crate) fn alipay_body(trade: &Trade, notify: &GatewayNotify, now: u64, refund: Option<&str>) -> String {
    let time = |s: u64| citypay_ledger::Timestamp::from_unix_seconds(s).local_date_time();
    let paid = trade.paid_at.is_some();
    let paid_amount = if paid { yuan(trade.amount) } else { yuan(0) };
    let mut fields = serde_json::Map::new();
    let mut put = |k: &str, v: String| {
        fields.insert(k.to_owned(), serde_json::Value::String(v));
    };
    put("notify_type", "trade_status_sync".into());
    put("app_id", notify.app_id.to_string());
    put("auth_app_id", notify.app_id.to_string());
    put("charset", "utf-8".into());
    put("version", "1.0".into());
    put("trade_no", trade.id.to_string());
    put("out_trade_no", trade.out_trade_no.clone());
    put("seller_id", trade.merchant_id.to_string());
    put("trade_status", trade.status.code().into());
    put("total_amount", yuan(trade.amount));
    put("receipt_amount", paid_amount.clone());
    put("invoice_amount", paid_amount.clone());
    put("buyer_pay_amount", paid_amount.clone());
    put("point_amount", yuan(0));
    put("subject", trade.subject.clone());
    put("gmt_create", time(trade.created_at));
    if let Some(at) = trade.paid_at {
        put("gmt_payment", time(at));
        // A JSON string in notifications, camelCase (unlike the answers' array).
        put("fund_bill_list", format!("[{{\"amount\":\"{paid_amount}\",\"fundChannel\":\"ALIPAYACCOUNT\"}}]"));
    }
    if trade.refunded > 0 {
        put("refund_fee", yuan(trade.refunded));
    }
    if let Some(out_request_no) = refund {
        put("out_biz_no", out_request_no.to_owned());
        put("gmt_refund", time(now));
    }
    if trade.status == TradeStatus::TradeClosed {
        put("gmt_close", time(now));
    }
    serde_json::json!({ "app_id": notify.app_id, "url": notify.url, "fields": fields }).to_string()
}

/// Marks an event given up: it is never due again.
const GIVEN_UP_AT: i64 = i64::MAX;

/// Seconds a dispatcher holds an event it is sending: longer than one attempt can take (10 s to
/// answer and 10 s for the body), so no other dispatcher (a deposed writer's, another server's)
/// sends the same event while it is in flight. A dispatcher that dies holding one frees it when
/// the hold runs out, and the event is sent again: delivery is at least once.
pub const CLAIM_S: u64 = 60;

/// The signature header value for `body` at `timestamp`.
pub fn signature(secret: &str, timestamp: u64, body: &str) -> String {
    format!("t={timestamp},v1={}", hmac_hex(secret.as_bytes(), format!("{timestamp}.{body}").as_bytes()))
}

fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    citypay_directory::hex::encode(&mac.finalize().into_bytes())
}

/// What one pass of the dispatcher did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DispatchReport {
    /// Answered with 2xx.
    pub delivered: usize,
    /// Failed; scheduled again.
    pub retried: usize,
    /// Failed for the last time.
    pub given_up: usize,
    /// The merchant has no notification URL; nothing sent.
    pub skipped: usize,
    /// Due, but another dispatcher took it first; nothing sent.
    pub held_elsewhere: usize,
    /// Each failed attempt, for the server's log and metrics.
    pub failures: Vec<DeliveryFailure>,
}

/// One attempt that got no 2xx answer. It names no URL: a merchant's URL can carry a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryFailure {
    /// The merchant whose endpoint failed.
    pub merchant: u64,
    /// The event's id, as in `Citypay-Event-Id`.
    pub event_id: String,
    /// Which attempt this was (1 is the first).
    pub attempt: i64,
    /// The HTTP status, or why no answer came.
    pub reason: String,
    /// Seconds until the next attempt; `None`: given up.
    pub retry_in_s: Option<u64>,
}

/// Delivers due outbox events.
#[derive(Clone)]
pub struct Dispatcher<D> {
    directory: Directory,
    deliver: D,
    schedule_s: Vec<u64>,
    /// Sign gateway trades' notifications; without them those wait (retried on schedule).
    gateway_keys: Option<Arc<PlatformKeys>>,
}

impl<D> std::fmt::Debug for Dispatcher<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").field("schedule_s", &self.schedule_s).finish_non_exhaustive()
    }
}

struct Due {
    id: Vec<u8>,
    merchant: u64,
    kind: String,
    body: String,
    attempts: i64,
    next_attempt_at: i64,
}

impl<D: Deliver> Dispatcher<D> {
    /// A dispatcher retrying on `schedule_s` (see [`DEFAULT_SCHEDULE_S`]).
    pub fn new(directory: Directory, deliver: D, schedule_s: Vec<u64>) -> Dispatcher<D> {
        Dispatcher { directory, deliver, schedule_s, gateway_keys: None }
    }

    /// The same dispatcher signing gateway trades' notifications with `keys`.
    #[must_use]
    pub fn with_gateway_keys(mut self, keys: Arc<PlatformKeys>) -> Dispatcher<D> {
        self.gateway_keys = Some(keys);
        self
    }

    /// Delivers up to `limit` due events, oldest first.
    pub async fn run_once(&self, limit: u64) -> Result<DispatchReport, DirectoryError> {
        let now = self.directory.clock().now().unix_seconds();
        let rows = self
            .directory
            .read(
                "SELECT id, merchant_id, kind, body, attempts, next_attempt_at FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= ?1 ORDER BY id LIMIT ?2",
                vec![Value::Int(i64::try_from(now).unwrap_or(i64::MAX)), Value::Int(i64::try_from(limit).unwrap_or(100))],
            )
            .await?;
        let mut report = DispatchReport::default();
        for row in rows {
            let due = match row.as_slice() {
                [Value::Blob(id), Value::Int(merchant), Value::Text(kind), Value::Text(body), Value::Int(attempts), Value::Int(next_attempt_at)] => Due {
                    id: id.clone(),
                    merchant: u64::try_from(*merchant).map_err(|_| DirectoryError::Storage("merchant".into()))?,
                    kind: kind.clone(),
                    body: body.clone(),
                    attempts: *attempts,
                    next_attempt_at: *next_attempt_at,
                },
                _ => return Err(DirectoryError::Storage("outbox row".into())),
            };
            if self.claim(&due, now).await? {
                self.deliver_one(due, now, &mut report).await?;
            } else {
                report.held_elsewhere += 1;
            }
        }
        Ok(report)
    }

    async fn deliver_one(&self, due: Due, now: u64, report: &mut DispatchReport) -> Result<(), DirectoryError> {
        let event_id = citypay_directory::hex::encode(&due.id);
        let answer = if due.kind == ALIPAY_NOTIFICATION {
            match self.alipay_form(&due, &event_id, now).await? {
                Ok((url, form)) => {
                    tracing::debug!(merchant = due.merchant, %event_id, attempt = due.attempts + 1, endpoint = %endpoint(&url), "posting an Alipay-form notification");
                    let headers = vec![("content-type", "application/x-www-form-urlencoded;charset=utf-8".to_owned())];
                    match self.deliver.post(&url, headers, form).await {
                        // Alipay's rule: anything but the body `success` is a failure.
                        Ok(answered) if (200..300).contains(&answered.status) && answered.body.trim() != "success" => {
                            Err(format!("HTTP {} without the body success", answered.status))
                        }
                        other => other,
                    }
                }
                Err(reason) => Err(reason),
            }
        } else {
            let merchant = self.directory.merchant(due.merchant).await?;
            let Some(url) = merchant.notify_url else {
                report.skipped += 1;
                return self.record(&due, Some(now), due.attempts, GIVEN_UP_AT).await;
            };
            let secret = self.directory.webhook_secret(due.merchant).await?;
            tracing::debug!(merchant = due.merchant, %event_id, attempt = due.attempts + 1, endpoint = %endpoint(&url), "posting a notification");
            let headers = vec![
                ("content-type", "application/json".to_owned()),
                ("citypay-event-id", event_id.clone()),
                ("citypay-signature", signature(secret.expose(), now, &due.body)),
            ];
            self.deliver.post(&url, headers, due.body.clone()).await
        };
        let attempts = due.attempts + 1;
        if matches!(&answer, Ok(answered) if (200..300).contains(&answered.status)) {
            tracing::debug!(merchant = due.merchant, %event_id, attempts, "notification delivered");
            report.delivered += 1;
            return self.record(&due, Some(now), attempts, GIVEN_UP_AT).await;
        }
        let wait = usize::try_from(due.attempts).ok().and_then(|i| self.schedule_s.get(i)).copied();
        let reason = match answer {
            Ok(answered) => format!("HTTP {}", answered.status),
            Err(error) => error,
        };
        report.failures.push(DeliveryFailure { merchant: due.merchant, event_id, attempt: attempts, reason, retry_in_s: wait });
        match wait {
            Some(wait) => {
                report.retried += 1;
                self.record(&due, None, attempts, i64::try_from(now + wait).unwrap_or(GIVEN_UP_AT)).await
            }
            None => {
                report.given_up += 1;
                self.record(&due, None, attempts, GIVEN_UP_AT).await
            }
        }
    }

    /// The URL and signed form body of a gateway trade's notification, or why there is none
    /// now (no key to sign with: retried on schedule).
    async fn alipay_form(&self, due: &Due, notify_id: &str, now: u64) -> Result<Result<(String, String), String>, DirectoryError> {
        let bad = || DirectoryError::Storage("alipay outbox body".into());
        let body: serde_json::Value = serde_json::from_str(&due.body).map_err(|_| bad())?;
        let app_id = body["app_id"].as_u64().ok_or_else(bad)?;
        let url = body["url"].as_str().ok_or_else(bad)?.to_owned();
        let mut fields: Vec<(&str, String)> = body["fields"]
            .as_object()
            .ok_or_else(bad)?
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v.to_owned())))
            .collect();
        fields.push(("notify_id", notify_id.to_owned()));
        fields.push(("notify_time", citypay_ledger::Timestamp::from_unix_seconds(now).local_date_time()));
        let app = match self.directory.gateway_app(app_id).await {
            Ok(app) => app,
            Err(DirectoryError::NotFound) => return Ok(Err(format!("app {app_id} is gone"))),
            Err(other) => return Err(other),
        };
        let Some(key) = self.gateway_keys.as_ref().and_then(|keys| keys.get(app.platform_key)) else {
            return Ok(Err(format!("no platform key {} to sign with", app.platform_key)));
        };
        Ok(Ok((url, citypay_gateway::notification_form(&fields, key))))
    }

    /// Holds `due` for [`CLAIM_S`] through the writer, guarded on the attempt it was read at:
    /// whether this dispatcher holds it now (false: another took it first).
    async fn claim(&self, due: &Due, now: u64) -> Result<bool, DirectoryError> {
        let key = vec![("id", Value::Blob(due.id.clone()))];
        let command = Command {
            event: None,
            guards: vec![Guard::Matches {
                table: "outbox",
                key: key.clone(),
                expect: vec![("attempts", Value::Int(due.attempts)), ("next_attempt_at", Value::Int(due.next_attempt_at))],
            }],
            rows: vec![ServiceRow {
                table: "outbox",
                key,
                columns: vec![("next_attempt_at", Value::Int(i64::try_from(now + CLAIM_S).unwrap_or(GIVEN_UP_AT)))],
                on_conflict: OnConflict::UpdateOnly,
            }],
            always_rows: Vec::new(),
        };
        match self.directory.shard().submit(command).await {
            Ok(_) => Ok(true),
            Err(citypay_shard::SubmitError::GuardFailed { .. }) => Ok(false),
            Err(other) => Err(DirectoryError::Unavailable(other.to_string())),
        }
    }

    /// Writes the attempt through the writer, guarded on the attempt count so two dispatchers
    /// never both count one attempt.
    async fn record(&self, due: &Due, delivered_at: Option<u64>, attempts: i64, next_attempt_at: i64) -> Result<(), DirectoryError> {
        let key = vec![("id", Value::Blob(due.id.clone()))];
        let delivered = delivered_at.map_or(Value::Null, |t| Value::Int(i64::try_from(t).unwrap_or(i64::MAX)));
        let command = Command {
            event: None,
            guards: vec![Guard::Matches { table: "outbox", key: key.clone(), expect: vec![("attempts", Value::Int(due.attempts))] }],
            rows: vec![ServiceRow {
                table: "outbox",
                key,
                columns: vec![
                    ("attempts", Value::Int(attempts)),
                    ("next_attempt_at", Value::Int(next_attempt_at)),
                    ("delivered_at", delivered),
                ],
                on_conflict: OnConflict::UpdateOnly,
            }],
            always_rows: Vec::new(),
        };
        match self.directory.shard().submit(command).await {
            Ok(_) | Err(citypay_shard::SubmitError::GuardFailed { .. }) => Ok(()),
            Err(other) => Err(DirectoryError::Unavailable(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_not_public() {
        for private in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "224.0.0.1", "198.18.0.1"] {
            assert!(!public_address(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "203.119.0.1", "2400:3200::1", "::ffff:8.8.8.8"] {
            assert!(public_address(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn logs_show_a_notification_urls_scheme_and_host_only() {
        assert_eq!(endpoint("https://user:pw@shop.example:8443/hooks/T0SECRET?token=abc#x"), "https://shop.example:8443");
        assert_eq!(endpoint("http://127.0.0.1:9999?token=abc"), "http://127.0.0.1:9999");
        assert_eq!(endpoint("http://[::1]/n"), "http://[::1]");
        assert_eq!(endpoint("not a url ?token=abc"), "?://");
        assert_eq!(without_user_part("https://user:pw@shop.example:8443/hooks?token=abc"), "https://shop.example:8443/hooks?token=abc");
        assert_eq!(without_user_part("https://shop.example/a@b"), "https://shop.example/a@b");
    }

    #[test]
    fn signatures_are_hmac_sha256_over_timestamp_and_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            hmac_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let expected = format!("t=7,v1={}", hmac_hex(b"whsec", b"7.{\"a\":1}"));
        assert_eq!(signature("whsec", 7, "{\"a\":1}"), expected);
        assert_ne!(signature("whsec", 7, "x"), signature("whsec", 8, "x"));
    }
}
