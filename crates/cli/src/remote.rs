//! One-shot commands through a running server: while `citypay serve` holds a database as its
//! writer, `settle` and `transit fare-run` send their request to it (`--server URL`) as the
//! platform operator instead of opening the database.

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Where to send a one-shot command instead of opening the database.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServerArgs {
    /// A running `citypay serve` (e.g. http://127.0.0.1:8080) that holds the database: the
    /// command is sent to it as the platform operator `--operator`, whose password is in
    /// CITYPAY_OPERATOR_PASSWORD.
    #[arg(long)]
    pub(crate) server: Option<String>,
    /// The platform operator who signs in on `--server`.
    #[arg(long, default_value = "root", requires = "server")]
    pub(crate) operator: String,
}

/// Signs in on `base` as `operator` and POSTs `body` to `path` under a fresh idempotency key;
/// answers the JSON body of a success, else an error with the server's code and message.
pub(crate) fn post_as_operator(base: &str, operator: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
    call_as_operator(base, operator, reqwest::Method::POST, path, body)
}

/// Signs in on `base` as `operator` and sends `body` (none for GET) to `path` with `method`
/// (a fresh idempotency key on a POST); answers the JSON body of a success, else an error
/// with the server's code and message.
pub(crate) fn call_as_operator(base: &str, operator: &str, method: reqwest::Method, path: &str, body: &Value) -> anyhow::Result<Value> {
    let password = std::env::var("CITYPAY_OPERATOR_PASSWORD").context("--server: the operator's password goes in CITYPAY_OPERATOR_PASSWORD")?;
    let base = base.trim_end_matches('/').to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let session = call(&client, reqwest::Method::POST, &format!("{base}/v1/operator-sessions"), None, None, &json!({"username": operator, "password": password})).await?;
        let token = session["token"].as_str().context("the sign-in answer has no token")?;
        // A command is idempotent by its day on the server; the key only keeps this request's answer.
        let key = format!("cli-{}-{}", path.trim_start_matches("/v1/"), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos());
        let key = (method == reqwest::Method::POST).then_some(key);
        call(&client, method, &format!("{base}{path}"), Some(token), key.as_deref(), body).await
    })
}

/// How long a call is retried while the server answers 503 (a writer being taken over, for
/// at most a few seconds).
const UNAVAILABLE_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(15);

async fn call(client: &reqwest::Client, method: reqwest::Method, url: &str, token: Option<&str>, key: Option<&str>, body: &Value) -> anyhow::Result<Value> {
    let started = std::time::Instant::now();
    let (status, answer) = loop {
        let mut request = client.request(method.clone(), url);
        if method != reqwest::Method::GET {
            request = request.json(body);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.with_context(|| format!("calling {url}"))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        // Unavailable: nothing was done, or the same idempotency key answers what was (a
        // sign-in is safe to repeat).
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE && started.elapsed() < UNAVAILABLE_RETRY_FOR {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            continue;
        }
        break (status, answer);
    };
    if !status.is_success() {
        let error = &answer["error"];
        bail!("{url}: {status} {}: {}", error["code"].as_str().unwrap_or("?"), error["message"].as_str().unwrap_or(""));
    }
    Ok(answer)
}
