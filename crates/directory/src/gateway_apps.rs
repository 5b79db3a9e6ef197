//! Merchants' apps on the Alipay-compatible gateway: an app id the merchant's SDK sends, the
//! app's RSA public key that verifies its requests, a default notification URL, and which of
//! the platform's keys signs its answers. A merchant registers, rotates and disables its own
//! apps; an operator can do the same for it.
//!
//! An app is read on every gateway call: rows are served from a per-server cache for
//! [`GATEWAY_APP_CACHE_TTL`], cleared at once on the server that changes an app, so a key
//! rotation or a disable reaches the other servers within that time.

use std::time::{Duration, Instant};

use citypay_gateway::AppKey;
use citypay_shard::{Command, Guard};
use citypay_store::{OnConflict, ServiceRow, Value};

use crate::{Directory, DirectoryError, int, text, uint};

/// How long a server serves an app's row without reading it again.
pub const GATEWAY_APP_CACHE_TTL: Duration = Duration::from_secs(5);
/// Apps one merchant may hold (a till fleet, a web shop, a mini-program: a handful).
pub const GATEWAY_APPS_MAX: usize = 20;

/// A merchant's gateway app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayApp {
    /// The 16-digit id its SDK sends as `app_id`.
    pub app_id: u64,
    /// The merchant it acts for.
    pub merchant: u64,
    /// Verifies its requests.
    pub public_key: AppKey,
    /// Where its trades' notifications go when a request names none.
    pub notify_url: Option<String>,
    /// The platform key that signs its answers and notifications.
    pub platform_key: u32,
    /// When it was disabled; a disabled app's calls are refused.
    pub disabled_at: Option<u64>,
    /// Unix seconds.
    pub created_at: u64,
}

/// A change to an app; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct GatewayAppChange {
    /// A new public key (rotation: the old one stops at once).
    pub public_key: Option<AppKey>,
    /// A new default notification URL (`Some(None)` removes it).
    pub notify_url: Option<Option<String>>,
    /// Another platform key to sign its answers (after the merchant configured its public key).
    pub platform_key: Option<u32>,
    /// Disable (`true`) or enable again (`false`).
    pub disabled: Option<bool>,
}

macro_rules! select_apps {
    ($where:literal) => {
        concat!("SELECT app_id, merchant_id, public_key, notify_url, platform_key, disabled_at, created_at FROM gateway_apps ", $where)
    };
}

fn app_from_row(row: &[Value]) -> Result<GatewayApp, DirectoryError> {
    let storage = |what: &str| DirectoryError::Storage(format!("gateway app {what}"));
    let [app_id, merchant, key, notify_url, platform_key, disabled_at, created_at] = row else { return Err(storage("row")) };
    Ok(GatewayApp {
        app_id: u64::try_from(int(app_id)?).map_err(|_| storage("id"))?,
        merchant: u64::try_from(int(merchant)?).map_err(|_| storage("merchant"))?,
        public_key: AppKey::parse(&text(key)?).map_err(|_| storage("key"))?,
        notify_url: match notify_url {
            Value::Null => None,
            other => Some(text(other)?),
        },
        platform_key: u32::try_from(int(platform_key)?).map_err(|_| storage("platform key"))?,
        disabled_at: match disabled_at {
            Value::Null => None,
            other => Some(u64::try_from(int(other)?).map_err(|_| storage("disabled_at"))?),
        },
        created_at: u64::try_from(int(created_at)?).map_err(|_| storage("created_at"))?,
    })
}

fn opt_text(value: Option<&str>) -> Value {
    value.map_or(Value::Null, |v| Value::Text(v.to_owned()))
}

/// The smallest app id: 16 digits, never starting with 0, as Alipay's.
const APP_ID_MIN: u64 = 1_000_000_000_000_000;

/// An app id drawn for a merchant of `bucket`: 16 digits whose rest modulo 1,024 (past
/// [`APP_ID_MIN`]) is the bucket. The id names the shard that holds its app (the bucket's, by
/// the map, with no read), and two shards never draw the same one: each draws only in buckets
/// it holds, and a bucket is held by one shard at a time (its apps move with it).
pub fn app_id_in(bucket: citypay_routing::Bucket, drawn: u64) -> u64 {
    let buckets = u64::from(citypay_routing::BUCKETS);
    APP_ID_MIN + (drawn % (9 * APP_ID_MIN / buckets)) * buckets + u64::from(bucket.0)
}

/// The bucket an app id drawn by [`app_id_in`] names (ids drawn before name a bucket by chance:
/// look for them on every shard when the bucket's does not know them).
pub fn bucket_of_app(app_id: u64) -> Option<citypay_routing::Bucket> {
    let rest = app_id.checked_sub(APP_ID_MIN)?;
    u16::try_from(rest % u64::from(citypay_routing::BUCKETS)).ok().map(citypay_routing::Bucket)
}

impl Directory {
    /// Registers an app for `merchant`, signed for by platform key `platform_key`.
    pub async fn register_gateway_app(&self, merchant: u64, public_key: &AppKey, notify_url: Option<&str>, platform_key: u32) -> Result<GatewayApp, DirectoryError> {
        self.merchant(merchant).await?;
        if self.gateway_apps(merchant).await?.len() >= GATEWAY_APPS_MAX {
            return Err(DirectoryError::InvalidField { field: "app", message: format!("a merchant holds at most {GATEWAY_APPS_MAX} apps") });
        }
        let now = self.now().unix_seconds();
        for attempt in 0..4u32 {
            let drawn = u64::from_le_bytes(self.draw(&["gateway_app", &merchant.to_string(), &now.to_string(), &attempt.to_string()]));
            let app_id = app_id_in(citypay_routing::bucket_of_owner(merchant), drawn);
            let key = vec![("app_id", uint(app_id))];
            let command = Command {
                event: None,
                guards: vec![Guard::Absent { table: "gateway_apps", key: key.clone() }],
                rows: vec![ServiceRow {
                    table: "gateway_apps",
                    key,
                    columns: vec![
                        ("merchant_id", uint(merchant)),
                        ("public_key", Value::Text(public_key.to_base64())),
                        ("notify_url", opt_text(notify_url)),
                        ("platform_key", Value::Int(i64::from(platform_key))),
                        ("disabled_at", Value::Null),
                        ("created_at", uint(now)),
                        ("updated_at", uint(now)),
                    ],
                    on_conflict: OnConflict::Fail,
                }],
                always_rows: Vec::new(),
            };
            if self.submit(command).await?.is_ok() {
                return Ok(GatewayApp {
                    app_id,
                    merchant,
                    public_key: public_key.clone(),
                    notify_url: notify_url.map(str::to_owned),
                    platform_key,
                    disabled_at: None,
                    created_at: now,
                });
            }
        }
        Err(DirectoryError::Unavailable("no free app id; retry".into()))
    }

    /// An app by its id, disabled or not (see [`GATEWAY_APP_CACHE_TTL`]).
    pub async fn gateway_app(&self, app_id: u64) -> Result<GatewayApp, DirectoryError> {
        if let Ok(cache) = self.gateway_apps.read()
            && let Some((app, read_at)) = cache.get(&app_id)
            && read_at.elapsed() < GATEWAY_APP_CACHE_TTL
        {
            return app.clone().ok_or(DirectoryError::NotFound);
        }
        let rows = self.read(select_apps!("WHERE app_id = ?1"), vec![uint(app_id)]).await?;
        let app = rows.first().map(|row| app_from_row(row)).transpose()?;
        if let Ok(mut cache) = self.gateway_apps.write() {
            // Unknown ids are kept too (guessers must not cost a read each); bounded.
            if cache.len() >= 10_000 {
                cache.retain(|_, (_, at)| at.elapsed() < GATEWAY_APP_CACHE_TTL);
            }
            if cache.len() < 10_000 {
                cache.insert(app_id, (app.clone(), Instant::now()));
            }
        }
        app.ok_or(DirectoryError::NotFound)
    }

    /// A merchant's apps, oldest first.
    pub async fn gateway_apps(&self, merchant: u64) -> Result<Vec<GatewayApp>, DirectoryError> {
        let rows = self.read(select_apps!("WHERE merchant_id = ?1 ORDER BY created_at, app_id"), vec![uint(merchant)]).await?;
        rows.iter().map(|row| app_from_row(row)).collect()
    }

    /// Changes an app. `owner`: the merchant that must own it (`None` for an operator).
    pub async fn change_gateway_app(&self, app_id: u64, owner: Option<u64>, change: &GatewayAppChange) -> Result<GatewayApp, DirectoryError> {
        let app = self.gateway_app_uncached(app_id).await?;
        if owner.is_some_and(|m| m != app.merchant) {
            return Err(DirectoryError::NotFound);
        }
        let now = self.now().unix_seconds();
        let mut columns = vec![("updated_at", uint(now))];
        let mut changed = app.clone();
        if let Some(key) = &change.public_key {
            columns.push(("public_key", Value::Text(key.to_base64())));
            changed.public_key = key.clone();
        }
        if let Some(url) = &change.notify_url {
            columns.push(("notify_url", opt_text(url.as_deref())));
            changed.notify_url = url.clone();
        }
        if let Some(platform_key) = change.platform_key {
            columns.push(("platform_key", Value::Int(i64::from(platform_key))));
            changed.platform_key = platform_key;
        }
        match change.disabled {
            Some(true) if app.disabled_at.is_none() => {
                columns.push(("disabled_at", uint(now)));
                changed.disabled_at = Some(now);
            }
            Some(false) => {
                columns.push(("disabled_at", Value::Null));
                changed.disabled_at = None;
            }
            _ => {}
        }
        let key = vec![("app_id", uint(app_id))];
        let command = Command {
            event: None,
            guards: vec![Guard::Matches { table: "gateway_apps", key: key.clone(), expect: vec![("merchant_id", uint(app.merchant))] }],
            rows: vec![ServiceRow { table: "gateway_apps", key, columns, on_conflict: OnConflict::UpdateOnly }],
            always_rows: Vec::new(),
        };
        let written = self.submit(command).await?;
        if let Ok(mut cache) = self.gateway_apps.write() {
            cache.remove(&app_id);
        }
        written.map_err(|_| DirectoryError::NotFound)?;
        Ok(changed)
    }

    /// Apps whose answers platform key `key_id` signs.
    pub async fn gateway_apps_signed_by(&self, key_id: u32) -> Result<usize, DirectoryError> {
        let rows = self.read("SELECT COUNT(*) FROM gateway_apps WHERE platform_key = ?1", vec![Value::Int(i64::from(key_id))]).await?;
        Ok(rows.first().and_then(|r| r.first()).map(int).transpose()?.and_then(|n| usize::try_from(n).ok()).unwrap_or(0))
    }

    async fn gateway_app_uncached(&self, app_id: u64) -> Result<GatewayApp, DirectoryError> {
        if let Ok(mut cache) = self.gateway_apps.write() {
            cache.remove(&app_id);
        }
        self.gateway_app(app_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_id_has_sixteen_digits_and_names_its_merchant_s_bucket() {
        for (bucket, drawn) in [(0u16, 0u64), (517, u64::MAX), (1023, 123_456_789), (4, 9 * APP_ID_MIN)] {
            let id = app_id_in(citypay_routing::Bucket(bucket), drawn);
            assert_eq!(id.to_string().len(), 16, "{id}");
            assert_eq!(bucket_of_app(id), Some(citypay_routing::Bucket(bucket)));
        }
        assert_eq!(bucket_of_app(42), None);
    }
}
