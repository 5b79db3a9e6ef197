//! Finding the primary of a Patroni cluster: the leader key Patroni keeps in etcd names the
//! member, whose record gives its address. Never found by trying hosts: a PostgreSQL that
//! accepts writes may be an orphan whose Patroni agent died (it looks like a primary, and its
//! commits hang once a new leader is promoted).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;

use crate::etcd::Etcd;

/// How often the leader key is read.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// How long a leader read from etcd stays believed when etcd cannot be read again: Patroni's
/// ttl (`scripts/city-cluster.sh`), after which that leader may have been replaced unseen.
const BELIEVED_FOR: Duration = Duration::from_secs(10);

/// The primary's URL as last seen, and when, kept fresh by a background task.
#[derive(Debug, Clone)]
pub(crate) struct Primary(Arc<RwLock<(Option<String>, std::time::Instant)>>);

impl Primary {
    /// The current primary's URL; `None` while the cluster has no leader, or while etcd has
    /// not confirmed one for longer than a leader's key lives.
    pub(crate) fn url(&self) -> Option<String> {
        let (url, seen) = &*self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        url.clone().filter(|_| seen.elapsed() < BELIEVED_FOR)
    }

    fn set(&self, now: Option<String>) {
        let mut current = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.0 != now {
            tracing::info!(primary = now.as_deref().map(redacted).unwrap_or_default(), "the Patroni leader changed");
            current.0 = now;
        }
        current.1 = std::time::Instant::now();
    }

    /// Follows the leader of the Patroni cluster `scope` (its etcd prefix, such as
    /// `/service/citypay`) from now on; `template` is the database URL whose host and port
    /// are replaced by the leader's. Waits (at most 60 s) until there is one.
    pub(crate) async fn follow(etcd: Etcd, scope: &str, template: &str) -> anyhow::Result<Primary> {
        let primary = Primary::watch(etcd, scope, template, true);
        let started = std::time::Instant::now();
        while primary.url().is_none() {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "the Patroni cluster {scope:?} has no leader in etcd");
            tokio::time::sleep(LOOK_EVERY).await;
        }
        Ok(primary)
    }

    /// Follows the leader as [`Primary::follow`] does, without waiting for one: another
    /// shard's cluster, which this server must not wait on to start. `own`: the cluster is
    /// this server's, whose replication state its metrics report.
    pub(crate) fn watch(etcd: Etcd, scope: &str, template: &str, own: bool) -> Primary {
        let primary = Primary(Arc::new(RwLock::new((None, std::time::Instant::now()))));
        let (found, prefix, template) = (primary.clone(), scope.trim_end_matches('/').to_owned(), template.to_owned());
        tokio::spawn(async move {
            let mut round = 0u64;
            loop {
                round += 1;
                if own && round % 10 == 0 {
                    report_members(&etcd, &prefix).await;
                }
                let now = match leader(&etcd, &prefix).await {
                    Ok(Some(address)) => Some(with_address(&template, &address)),
                    Ok(None) => None,
                    // etcd out of reach: keep what was known (the commits themselves are the
                    // fence; a stale address only fails them).
                    Err(error) => {
                        tracing::debug!(error = %format!("{error:#}"), "reading the Patroni leader failed");
                        tokio::time::sleep(LOOK_EVERY).await;
                        continue;
                    }
                };
                found.set(now);
                tokio::time::sleep(LOOK_EVERY).await;
            }
        });
        primary
    }
}

/// Where a shard of the country keeps its data from now on: its database's URL, or the
/// primary of its Patroni cluster, followed.
pub(crate) fn locate(shard: &citypay_country::ShardDatabase) -> anyhow::Result<citypay_store_postgres::Locate> {
    Ok(match &shard.patroni {
        Some(patroni) => {
            let primary = Primary::watch(Etcd::new(&patroni.etcd)?, &patroni.scope, &shard.db, false);
            Arc::new(move || primary.url())
        }
        None => {
            let url = shard.db.clone();
            Arc::new(move || Some(url.clone()))
        }
    })
}

/// The URL of a shard's database now (of its Patroni cluster's primary, read once): for a
/// command that runs for seconds, which fails, and is run again, if the primary moves meanwhile.
pub(crate) async fn primary_now(shard: &citypay_country::ShardDatabase) -> anyhow::Result<String> {
    let Some(patroni) = &shard.patroni else { return Ok(shard.db.clone()) };
    let address = leader(&Etcd::new(&patroni.etcd)?, patroni.scope.trim_end_matches('/'))
        .await?
        .with_context(|| format!("shard {}'s Patroni cluster has no leader now", shard.shard))?;
    Ok(with_address(&shard.db, &address))
}

/// Every shard's database URL now ([`primary_now`]), from synchronous code.
pub(crate) fn primaries_now(shards: &[citypay_country::ShardDatabase]) -> anyhow::Result<Vec<(u16, String)>> {
    if shards.iter().all(|s| s.patroni.is_none()) {
        return Ok(shards.iter().map(|s| (s.shard, s.db.clone())).collect());
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut found = Vec::new();
        for shard in shards {
            found.push((shard.shard, primary_now(shard).await?));
        }
        Ok(found)
    })
}

/// The replication state Patroni records, as metrics: members running, and whether a
/// synchronous standby is named (strict synchronous mode writes nothing without one).
async fn report_members(etcd: &Etcd, scope: &str) {
    if let Ok(members) = etcd.get_prefix(&format!("{scope}/members/")).await {
        let running = members
            .iter()
            .filter(|(_, value)| serde_json::from_slice::<serde_json::Value>(value).is_ok_and(|m| m["state"] == "running"))
            .count();
        metrics::gauge!("citypay_patroni_members_running").set(running as f64);
    }
    if let Ok(sync) = etcd.get(&format!("{scope}/sync")).await {
        let named = sync
            .and_then(|value| serde_json::from_slice::<serde_json::Value>(&value).ok())
            .is_some_and(|s| s["sync_standby"].as_str().is_some_and(|name| !name.is_empty()));
        metrics::gauge!("citypay_patroni_sync_standby").set(if named { 1.0 } else { 0.0 });
    }
}

/// `host:port` of the leader, from its member record's `conn_url`.
async fn leader(etcd: &Etcd, scope: &str) -> anyhow::Result<Option<String>> {
    let Some(name) = etcd.get(&format!("{scope}/leader")).await? else { return Ok(None) };
    let name = String::from_utf8(name).context("the leader key")?;
    let Some(member) = etcd.get(&format!("{scope}/members/{name}")).await? else { return Ok(None) };
    let member: serde_json::Value = serde_json::from_slice(&member).context("the leader's member record")?;
    let url = member["conn_url"].as_str().context("the leader's member record has no conn_url")?;
    Ok(Some(authority(url).to_owned()))
}

/// The `host:port` of a `postgres://[user[:password]@]host:port/...` URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split(['/', '?']).next().unwrap_or(rest);
    rest.rsplit_once('@').map_or(rest, |(_, host)| host)
}

/// `template` with its host and port replaced by `address`.
pub(crate) fn with_address(template: &str, address: &str) -> String {
    let (scheme, rest) = template.split_once("://").unwrap_or(("postgres", template));
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let user = authority.rsplit_once('@').map(|(user, _)| format!("{user}@")).unwrap_or_default();
    format!("{scheme}://{user}{address}{tail}")
}

fn redacted(url: &str) -> String {
    citypay_store::DbUrl::Postgres(url.to_owned()).redacted()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leaders_address_replaces_the_templates() {
        assert_eq!(authority("postgres://127.0.0.1:57005/postgres"), "127.0.0.1:57005");
        assert_eq!(authority("postgres://u:p@10.213.1.11:5432/x?sslmode=disable"), "10.213.1.11:5432");
        assert_eq!(with_address("postgres://citypay:pw@leader/citypay", "127.0.0.1:57005"), "postgres://citypay:pw@127.0.0.1:57005/citypay");
        assert_eq!(with_address("postgres://h:1/db?x=1", "10.0.0.1:2"), "postgres://10.0.0.1:2/db?x=1");
    }
}
