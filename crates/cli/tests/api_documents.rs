//! What a merchant's developer reads: the OpenAPI document (query parameters where they are
//! sent, how each caller authenticates, the notifications as webhooks) works with a client
//! generated from it by openapi-python-client, and failed notifications are logged and counted.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{City, OPERATOR_PASSWORD, validator_authorization};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ID_NUMBER: &str = "11010519491231002X";

/// The virtual environment holding openapi-python-client (`scripts/test.sh` makes it):
/// `CITYPAY_OPENAPI_CLIENT_VENV`, else `target/openapi-client-venv` in the workspace.
fn client_venv() -> Option<PathBuf> {
    let venv = std::env::var_os("CITYPAY_OPENAPI_CLIENT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/openapi-client-venv"));
    if venv.join("bin/openapi-python-client").exists() {
        return Some(venv);
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "openapi-python-client is not installed in {} and CI=true: run scripts/test.sh", venv.display());
    eprintln!("skipping the generated client: no openapi-python-client in {} (scripts/test.sh installs it)", venv.display());
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_drives_a_generated_client() {
    let city = City::start().await;
    let api = &city.api;
    let (status, spec, _) = api.call("GET", "/openapi.json", None, None, None).await;
    assert_eq!(status, StatusCode::OK);

    // Query parameters are query parameters.
    for (path, name) in [("/v1/city-stats", "date"), ("/v1/transit/legs", "date"), ("/v1/transit/my-day", "date"), ("/v1/transit/revenue", "date"), ("/v1/my/bills", "limit")] {
        let parameters = spec["paths"][path]["get"]["parameters"].as_array().unwrap_or_else(|| panic!("{path} has parameters"));
        let parameter = parameters.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{path} has {name}"));
        assert_eq!(parameter["in"], "query", "{path} {name}");
    }
    // Every kind of caller has a scheme, the validators' signature included.
    let schemes = &spec["components"]["securitySchemes"];
    for scheme in ["resident", "operator", "merchant", "validator"] {
        assert!(schemes[scheme].is_object(), "no security scheme {scheme}: {schemes}");
    }
    let signing = schemes["validator"]["description"].as_str().unwrap();
    assert!(signing.contains("Ed25519") && signing.contains("`citypay-validator/v1\\n<METHOD> <path>"), "the signed bytes, tag first: {signing}");
    // Every operation names its scheme, and one that needs credentials refuses a call without.
    for (path, methods) in spec["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            let security = operation["security"].as_array().unwrap_or_else(|| panic!("{method} {path} declares no security"));
            let public = security.iter().all(|s| s.as_object().is_some_and(serde_json::Map::is_empty));
            if public {
                continue;
            }
            let concrete = concrete(path);
            let (status, body, _) = api.call(&method.to_uppercase(), &concrete, None, None, Some(json!({}))).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} without credentials: {body}");
        }
    }
    // The notifications are documented: where they go, how to check them, when they are retried.
    let webhook = &spec["webhooks"]["trade.status_changed"]["post"];
    let description = webhook["description"].as_str().unwrap();
    assert!(description.contains("HMAC-SHA256") && description.contains("<t>.<body>") && description.contains("15 h"), "{description}");
    assert!(webhook["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "Citypay-Signature"));

    let Some(venv) = client_venv() else { return };
    // The callers: a resident, the operator, a merchant, a validator of a transit operator.
    api.resident("Li Lei", "13800138000", ID_NUMBER, "correct horse").await;
    let operator = api.operator().await;
    let (_, merchant_key) = api.merchant(&operator, "91350100M000100Y43", "restaurant", None).await;
    let (_, transit_key) = api.merchant(&operator, "91110000600037341L", "transit", None).await;
    let device = citypay_ride::DeviceKey::from_seed([8; 32]);
    let registration = json!({"route_id": "824", "stop_id": "B_XIZHAN", "device_key": citypay_vault::hex::encode(&device.public_bytes())});
    let (status, validator, _) = api.call("POST", "/v1/validators", Some(&transit_key), Some("v-1"), Some(registration)).await;
    assert_eq!(status, StatusCode::CREATED, "{validator}");
    let id = u32::try_from(validator["validator_id"].as_u64().unwrap()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let authorization = validator_authorization(&device, id, "GET", &format!("/v1/validators/{id}/deny-list"), now, "");

    // Generate the client from the served document, then call through it.
    let dir = city.dir.path();
    std::fs::write(dir.join("openapi.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    let path = format!("{}:{}", venv.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let generated = Command::new(venv.join("bin/openapi-python-client"))
        .args(["generate", "--meta", "none", "--path"])
        .arg(dir.join("openapi.json"))
        .arg("--output-path")
        .arg(dir.join("client/citypay_client"))
        .env("PATH", &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&generated.stdout);
    assert!(generated.status.success(), "{stdout}{}", String::from_utf8_lossy(&generated.stderr));
    assert!(!stdout.contains("Unable to") && !stdout.contains("Cannot"), "parts of the document were not understood:\n{stdout}");
    let calls = Command::new(venv.join("bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi_client/calls.py"))
        .env("PYTHONPATH", dir.join("client"))
        .env("CITYPAY_BASE", &api.base)
        .env("RESIDENT_MOBILE", "13800138000")
        .env("RESIDENT_PASSWORD", "correct horse")
        .env("OPERATOR_PASSWORD", OPERATOR_PASSWORD)
        .env("MERCHANT_KEY", merchant_key.trim_start_matches("ApiKey "))
        .env("VALIDATOR_ID", id.to_string())
        .env("VALIDATOR_AUTHORIZATION", authorization)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&calls.stdout);
    assert!(calls.status.success(), "{out}{}", String::from_utf8_lossy(&calls.stderr));
    for caller in ["anonymous", "resident GET", "operator GET", "merchant GET", "validator GET"] {
        assert!(out.contains(caller), "{out}");
    }
    city.finish(&[ID_NUMBER, "correct horse"]);
}

/// A documented path with its parameters filled in with values of the right shape.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').map_or(rest.len(), |e| start + e);
        out.push_str(&rest[..start]);
        out.push_str(match &rest[start + 1..end] {
            "date" => "2026-01-01",
            "key_id" => "mk_x",
            "out_trade_no" => "T1",
            _ => "1",
        });
        rest = &rest[(end + 1).min(rest.len())..];
    }
    out.push_str(rest);
    out
}

/// An endpoint that answers every notification with 500.
async fn failing_receiver() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook?token=receiver-token", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_notifications_are_logged_and_counted() {
    let city = City::start().await;
    let api = &city.api;
    let (url, seen) = failing_receiver().await;
    let operator = api.operator().await;
    let (_, shop) = api.merchant(&operator, "91350100M000100Y43", "restaurant", Some(&url)).await;
    let trade = json!({"out_trade_no": "N1", "amount": {"amount": 100, "currency": "CNY"}, "subject": "tea"});
    let (status, body, _) = api.call("POST", "/v1/trades", Some(&shop), None, Some(trade)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body, _) = api.call("POST", "/v1/trades/N1/close", Some(&shop), None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = api.client.get(format!("{}/metrics", api.base)).send().await.unwrap().text().await.unwrap();
        let logs = std::fs::read_to_string(&city.log).unwrap();
        let logged: Vec<Value> = logs.lines().filter_map(|l| serde_json::from_str(l).ok()).filter(|l: &Value| l["message"] == "notification delivery failed; retrying").collect();
        if metrics.contains("citypay_notifications_total{outcome=\"retried\"}") && !logged.is_empty() {
            assert!(seen.load(std::sync::atomic::Ordering::SeqCst) >= 1);
            assert_eq!(logged[0]["reason"], "HTTP 500", "{}", logged[0]);
            assert_eq!(logged[0]["attempt"], 1);
            assert_eq!(logged[0]["retry_in_s"], 240, "the first retry follows Alipay's schedule");
            assert!(!logs.contains("receiver-token"), "the log names no notification URL");
            break;
        }
        assert!(Instant::now() < deadline, "no failed delivery logged and counted:\n{logs}\n{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    city.finish(&[]);
}
