//! API fuzzing: Schemathesis (PyPI) generates requests for every operation of the served
//! OpenAPI document, valid and invalid, signed in as the caller each operation names (the hooks
//! in `api_fuzz/hooks.py`: a resident, merchants, a transit operator and its validator, a
//! platform and a city operator). No answer may be a 5xx, and every answer must match the
//! document: its status, its content type and its schema (errors: the error body). A run
//! refused everywhere tested nothing, so every operation must also have answered 2xx at least
//! once. The books are audited after, and the server's log holds none of the secrets used.
//!
//! `CITYPAY_API_FUZZ_EXAMPLES` sets the examples per operation (default 12, the CI run);
//! `CITYPAY_API_FUZZ_SEED` the seed (default 1).

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use support::{Api, City, OPERATOR_PASSWORD, Target, admin, start};

/// The checks of every answer.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";
/// The whole run's limit: past it the test fails rather than eat CI's budget.
const LIMIT: Duration = Duration::from_secs(240);

/// The virtual environment holding Schemathesis (`scripts/test.sh` makes it):
/// `CITYPAY_API_FUZZ_VENV`, else `target/api-fuzz-venv` in the workspace.
fn schemathesis_venv() -> Option<PathBuf> {
    let venv = std::env::var_os("CITYPAY_API_FUZZ_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/api-fuzz-venv"));
    if venv.join("bin/st").exists() {
        return Some(venv);
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "Schemathesis is not installed in {} and CI=true: run scripts/test.sh", venv.display());
    eprintln!("skipping the API fuzzing: no Schemathesis in {} (scripts/test.sh installs it)", venv.display());
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_as_documented_under_fuzzing() {
    let Some(venv) = schemathesis_venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let target = Target::sqlite(dir.path());
    admin(&target, &["onboard-city", "--code", "330100", "--name", "Hangzhou"]);
    admin(&target, &["create-operator", "--username", "root", "--role", "platform"]);
    admin(&target, &["create-operator", "--username", "hz", "--role", "city", "--city", "330100"]);
    let log = dir.path().join("serve.log");
    let server = start(&target, &log).await;
    let api = Api::new(&server);
    let city = City { dir, target, server, api, log };

    let calls = city.dir.path().join("calls.ndjson");
    let examples = std::env::var("CITYPAY_API_FUZZ_EXAMPLES").unwrap_or_else(|_| "12".to_owned());
    let seed = std::env::var("CITYPAY_API_FUZZ_SEED").unwrap_or_else(|_| "1".to_owned());
    let started = Instant::now();
    let mut child = Command::new(venv.join("bin/st"))
        .args(["run", &format!("{}/openapi.json", city.api.base), "--checks", CHECKS, "--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", &examples, "--seed", &seed, "--workers", "1", "--request-timeout", "30", "--no-color"])
        .current_dir(city.dir.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api_fuzz"))
        .env("CITYPAY_BASE", &city.api.base)
        .env("CITYPAY_DB", &city.target.db)
        .env("OPERATOR_PASSWORD", OPERATOR_PASSWORD)
        .env("CITYPAY_FUZZ_LOG", &calls)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the output on threads so a full pipe never stalls the run.
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let output = format!("{}{}", stdout.join().unwrap(), stderr.join().unwrap());
    let status = status.unwrap_or_else(|| panic!("Schemathesis ran past {LIMIT:?}:\n{output}"));
    assert!(status.success(), "Schemathesis found failures:\n{output}");

    // Every documented operation answered 2xx at least once.
    let (code, spec, _) = city.api.call("GET", "/openapi.json", None, None, None).await;
    assert_eq!(code, StatusCode::OK);
    let mut answers: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    for (path, methods) in spec["paths"].as_object().unwrap() {
        for method in methods.as_object().unwrap().keys() {
            answers.insert(format!("{} {path}", method.to_uppercase()), Vec::new());
        }
    }
    // Schemathesis reads the document but leaves out the operation that serves it: the fetch
    // above is that operation's call.
    answers.get_mut("GET /openapi.json").unwrap().push(code.as_u16());
    let log = std::fs::read_to_string(&calls).unwrap_or_default();
    for line in log.lines() {
        let call: Value = serde_json::from_str(line).unwrap();
        let operation = call["operation"].as_str().unwrap();
        let status = u16::try_from(call["status"].as_u64().unwrap()).unwrap();
        answers.get_mut(operation).unwrap_or_else(|| panic!("{operation} is not in the document")).push(status);
    }
    let untested: Vec<String> = answers
        .iter()
        .filter(|(_, statuses)| !statuses.iter().any(|s| (200..300).contains(s)))
        .map(|(operation, statuses)| format!("{operation}: {statuses:?}"))
        .collect();
    assert!(untested.is_empty(), "operations that never answered 2xx (the run tested nothing there):\n{}\n{output}", untested.join("\n"));
    let requests: usize = answers.values().map(Vec::len).sum();
    let succeeded = answers.values().flatten().filter(|s| (200..300).contains(*s)).count();
    eprintln!("api fuzzing: {} operations, {requests} requests ({succeeded} 2xx) in {:.0?}, seed {seed}, {examples} examples per operation", answers.len(), started.elapsed());
    city.finish(&["11010519491231002X", "330106195203150045", "correct horse", OPERATOR_PASSWORD]);
}
