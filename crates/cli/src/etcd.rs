//! etcd's v3 API through its JSON gateway (`POST /v3/kv/...`, keys and values in base64): the
//! few calls a city on several servers makes of it. etcd 3.4 serves it beside gRPC.

use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use serde_json::{Value, json};

/// A client of one etcd cluster.
#[derive(Debug, Clone)]
pub(crate) struct Etcd {
    endpoints: Vec<String>,
    http: reqwest::Client,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Etcd {
    /// `endpoints`: comma-separated `http://host:port` of the members.
    pub(crate) fn new(endpoints: &str) -> anyhow::Result<Etcd> {
        let endpoints: Vec<String> = endpoints.split(',').map(|e| e.trim().trim_end_matches('/').to_owned()).filter(|e| !e.is_empty()).collect();
        anyhow::ensure!(!endpoints.is_empty(), "no etcd endpoint");
        let http = reqwest::Client::builder().timeout(Duration::from_millis(1_500)).connect_timeout(Duration::from_millis(500)).build()?;
        Ok(Etcd { endpoints, http })
    }

    /// One call, tried on each member in turn until one answers.
    async fn call(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let mut last = None;
        for endpoint in &self.endpoints {
            match self.http.post(format!("{endpoint}{path}")).json(&body).send().await {
                Ok(response) if response.status().is_success() => return Ok(response.json().await?),
                Ok(response) => last = Some(anyhow::anyhow!("etcd {endpoint}{path}: {}", response.status())),
                Err(error) => last = Some(anyhow::Error::new(error).context(format!("etcd {endpoint}"))),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no etcd endpoint")))
    }

    /// The value of `key`, if set (a linearizable read).
    pub(crate) async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let answer = self.call("/v3/kv/range", json!({"key": b64(key.as_bytes())})).await?;
        let Some(value) = answer["kvs"].get(0).and_then(|kv| kv["value"].as_str()) else { return Ok(None) };
        Ok(Some(base64::engine::general_purpose::STANDARD.decode(value).context("etcd's value")?))
    }

    /// Every key under `prefix` with its value.
    pub(crate) async fn get_prefix(&self, prefix: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        // The range's end: the prefix with its last byte raised by one.
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let answer = self.call("/v3/kv/range", json!({"key": b64(prefix.as_bytes()), "range_end": b64(&end)})).await?;
        let decode = |field: &Value| base64::engine::general_purpose::STANDARD.decode(field.as_str().unwrap_or_default());
        let kvs = answer["kvs"].as_array().cloned().unwrap_or_default();
        kvs.iter().map(|kv| Ok((String::from_utf8(decode(&kv["key"])?)?, decode(&kv["value"])?))).collect()
    }

    /// Sets `key` to `value` only while `guard` holds a value that sorts before `below`
    /// (or is unset), setting `guard` to `below` in the same transaction. Answers whether it
    /// was set. Keeps a value that only moves forward: a later writer's never goes back.
    pub(crate) async fn put_if_before(&self, key: &str, value: &[u8], guard: &str, below: &str) -> anyhow::Result<bool> {
        let puts = json!([
            {"request_put": {"key": b64(key.as_bytes()), "value": b64(value)}},
            {"request_put": {"key": b64(guard.as_bytes()), "value": b64(below.as_bytes())}},
        ]);
        // Unset (created at revision 0), or set to a smaller value.
        let unset = json!([{"key": b64(guard.as_bytes()), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}]);
        if self.call("/v3/kv/txn", json!({"compare": unset, "success": puts})).await?["succeeded"].as_bool() == Some(true) {
            return Ok(true);
        }
        let before = json!([{"key": b64(guard.as_bytes()), "target": "VALUE", "result": "LESS", "value": b64(below.as_bytes())}]);
        Ok(self.call("/v3/kv/txn", json!({"compare": before, "success": puts})).await?["succeeded"].as_bool() == Some(true))
    }
}
