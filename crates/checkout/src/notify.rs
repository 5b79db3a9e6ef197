//! Delivering the outbox: every trade change is an event in the outbox, written in the same
//! transaction as the change; after commit a dispatcher posts it to the merchant's URL, signed,
//! and retries with back-off until a 2xx answer (the receiver deduplicates by event id).
//!
//! Signature header: `Citypay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//! `"<t>.<body>"` with the merchant's webhook secret; `Citypay-Event-Id` carries the event id.

use std::future::Future;

use citypay_directory::{Directory, DirectoryError};
use citypay_shard::{Command, Guard};
use citypay_store::{OnConflict, ServiceRow, Value};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Posts one notification; the status code, or why no answer came.
pub trait Deliver: Send + Sync {
    /// POSTs `body` (JSON) with `headers` to `url`.
    fn post(&self, url: &str, headers: Vec<(&'static str, String)>, body: String) -> impl Future<Output = Result<u16, String>> + Send;
}

/// Seconds to wait after each failed attempt: Alipay's notify schedule (2 m, 10 m, 10 m, 1 h,
/// 2 h, 6 h, 15 h); after the last one the event is given up (left undelivered, not retried).
pub const DEFAULT_SCHEDULE_S: &[u64] = &[120, 600, 600, 3_600, 7_200, 21_600, 54_000];

/// Marks an event given up: it is never due again.
const GIVEN_UP_AT: i64 = i64::MAX;

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
}

impl<D> std::fmt::Debug for Dispatcher<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").field("schedule_s", &self.schedule_s).finish_non_exhaustive()
    }
}

struct Due {
    id: Vec<u8>,
    merchant: u64,
    body: String,
    attempts: i64,
}

impl<D: Deliver> Dispatcher<D> {
    /// A dispatcher retrying on `schedule_s` (see [`DEFAULT_SCHEDULE_S`]).
    pub fn new(directory: Directory, deliver: D, schedule_s: Vec<u64>) -> Dispatcher<D> {
        Dispatcher { directory, deliver, schedule_s }
    }

    /// Delivers up to `limit` due events, oldest first.
    pub async fn run_once(&self, limit: u64) -> Result<DispatchReport, DirectoryError> {
        let now = self.directory.clock().now().unix_seconds();
        let rows = self
            .directory
            .read(
                "SELECT id, merchant_id, body, attempts FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= ?1 ORDER BY id LIMIT ?2",
                vec![Value::Int(i64::try_from(now).unwrap_or(i64::MAX)), Value::Int(i64::try_from(limit).unwrap_or(100))],
            )
            .await?;
        let mut report = DispatchReport::default();
        for row in rows {
            let due = match row.as_slice() {
                [Value::Blob(id), Value::Int(merchant), Value::Text(body), Value::Int(attempts)] => Due {
                    id: id.clone(),
                    merchant: u64::try_from(*merchant).map_err(|_| DirectoryError::Storage("merchant".into()))?,
                    body: body.clone(),
                    attempts: *attempts,
                },
                _ => return Err(DirectoryError::Storage("outbox row".into())),
            };
            self.deliver_one(due, now, &mut report).await?;
        }
        Ok(report)
    }

    async fn deliver_one(&self, due: Due, now: u64, report: &mut DispatchReport) -> Result<(), DirectoryError> {
        let merchant = self.directory.merchant(due.merchant).await?;
        let Some(url) = merchant.notify_url else {
            report.skipped += 1;
            return self.record(&due, Some(now), due.attempts, GIVEN_UP_AT).await;
        };
        let secret = self.directory.webhook_secret(due.merchant).await?;
        let event_id = citypay_directory::hex::encode(&due.id);
        let headers = vec![
            ("content-type", "application/json".to_owned()),
            ("citypay-event-id", event_id.clone()),
            ("citypay-signature", signature(secret.expose(), now, &due.body)),
        ];
        let answer = self.deliver.post(&url, headers, due.body.clone()).await;
        let attempts = due.attempts + 1;
        if matches!(answer, Ok(status) if (200..300).contains(&status)) {
            report.delivered += 1;
            return self.record(&due, Some(now), attempts, GIVEN_UP_AT).await;
        }
        let wait = usize::try_from(due.attempts).ok().and_then(|i| self.schedule_s.get(i)).copied();
        let reason = match answer {
            Ok(status) => format!("HTTP {status}"),
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
