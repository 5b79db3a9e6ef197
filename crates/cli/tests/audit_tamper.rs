//! `citypay audit` on tampered copies of a simulated city, on both backends: an edited
//! balance, an edited transfer whose balances were fixed up to match (only the journal's seals
//! can tell), a deleted journal row, and a cut-off tail are each reported, and the untouched
//! database is clean.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_citypay");

/// Each tampering, and what the audit must say about it.
const TAMPERINGS: &[(&str, &str, &str)] = &[
    (
        "an edited balance",
        "UPDATE accounts SET credits_posted = credits_posted + 100 WHERE id = (SELECT MIN(id) FROM accounts WHERE code = 1)",
        "stored",
    ),
    (
        "an edited transfer with its balances fixed up",
        "UPDATE accounts SET debits_posted = debits_posted + 1 WHERE id = (SELECT debit_account FROM transfers WHERE code = 22 AND kind = 0 ORDER BY id LIMIT 1);
         UPDATE accounts SET credits_posted = credits_posted + 1 WHERE id = (SELECT credit_account FROM transfers WHERE code = 22 AND kind = 0 ORDER BY id LIMIT 1);
         UPDATE transfers SET amount = amount + 1 WHERE code = 22 AND id = (SELECT id FROM transfers WHERE code = 22 AND kind = 0 ORDER BY id LIMIT 1)",
        "do not match the batch's seal",
    ),
    ("a deleted journal row", "DELETE FROM transfers WHERE id = (SELECT id FROM transfers WHERE code = 30 AND kind = 0 ORDER BY id DESC LIMIT 1)", "seal"),
    (
        "a cut-off tail",
        "DELETE FROM transfers WHERE batch = (SELECT MAX(batch) FROM journal_seals);
         DELETE FROM journal_seals WHERE batch = (SELECT MAX(batch) FROM journal_seals)",
        "cut off",
    ),
];

fn simulate(dir: &Path, db: Option<&str>) {
    let mut command = Command::new(BIN);
    command.current_dir(dir).args(["simulate", "--residents", "300", "--city", "Hangzhou", "--json", "--report"]).arg(dir.join("report"));
    if let Some(db) = db {
        command.args(["--db", db]);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

fn audit(db: &str, keys: &Path) -> (bool, String) {
    let output = Command::new(BIN).args(["audit", "--db", db, "--keys"]).arg(keys).output().unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn the_audit_catches_tampering_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    simulate(dir.path(), None);
    let report = dir.path().join("report");
    let keys = report.join("city.db.keys");
    let (clean, output) = audit(&report.join("city.db").display().to_string(), &keys);
    assert!(clean && output.contains("journal seals:") && output.contains("difference 0"), "{output}");
    for (i, (what, sql, expected)) in TAMPERINGS.iter().enumerate() {
        let copy = dir.path().join(format!("copy{i}"));
        std::fs::create_dir(&copy).unwrap();
        for file in ["city.db", "city.db-wal"] {
            if report.join(file).exists() {
                std::fs::copy(report.join(file), copy.join(file)).unwrap();
            }
        }
        let connection = rusqlite::Connection::open(copy.join("city.db")).unwrap();
        connection.execute_batch(sql).unwrap();
        drop(connection);
        let (clean, output) = audit(&copy.join("city.db").display().to_string(), &keys);
        assert!(!clean, "{what} went unnoticed:\n{output}");
        assert!(output.contains(expected), "{what}: expected '{expected}' in:\n{output}");
    }
    // A key file whose journal key was replaced is told from the one that sealed the journal,
    // by the audit and by the server, which refuses to seal under it.
    let other_keys = dir.path().join("other.keys");
    let text = std::fs::read_to_string(&keys).unwrap();
    let replaced: String = text.lines().map(|l| if l.starts_with("journal=") { format!("journal={}\n", "ab".repeat(32)) } else { format!("{l}\n") }).collect();
    std::fs::write(&other_keys, replaced).unwrap();
    std::fs::copy(report.join("city.db.keys.head"), dir.path().join("other.keys.head")).unwrap();
    let (clean, output) = audit(&report.join("city.db").display().to_string(), &other_keys);
    assert!(!clean && output.contains("not the one"), "{output}");
    let serve = Command::new(BIN).args(["admin", "onboard-city", "--code", "420100", "--name", "Wuhan", "--db"]).arg(report.join("city.db")).arg("--keys").arg(&other_keys).output().unwrap();
    assert!(!serve.status.success() && String::from_utf8_lossy(&serve.stderr).contains("restore the key file"), "{}", String::from_utf8_lossy(&serve.stderr));
}

/// The same on PostgreSQL (skipped without `CITYPAY_TEST_PG`, except under CI): each
/// tampering on a copy made with `CREATE DATABASE ... TEMPLATE`.
#[test]
fn the_audit_catches_tampering_on_postgres() {
    let Ok(server) = std::env::var("CITYPAY_TEST_PG") else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CITYPAY_TEST_PG is not set and CI=true");
        eprintln!("skipping: CITYPAY_TEST_PG not set");
        return;
    };
    let (base, _) = server.rsplit_once('/').unwrap();
    let name = format!("citypay_audit_{}", std::process::id());
    let mut admin = postgres::Client::connect(&server, postgres::NoTls).unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let original = format!("{base}/{name}");
    simulate(dir.path(), Some(&original));
    // With PostgreSQL the key file is in the report directory.
    let keys = dir.path().join("report").join("citypay.keys");
    let (clean, output) = audit(&original, &keys);
    assert!(clean && output.contains("journal seals:"), "{output}");
    for (i, (what, sql, expected)) in TAMPERINGS.iter().enumerate() {
        let copy = format!("{name}_copy{i}");
        admin.batch_execute(&format!("CREATE DATABASE {copy} TEMPLATE {name}")).unwrap();
        let url = format!("{base}/{copy}");
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client.batch_execute(sql).unwrap();
        drop(client);
        let (clean, output) = audit(&url, &keys);
        assert!(!clean, "{what} went unnoticed:\n{output}");
        assert!(output.contains(expected), "{what}: expected '{expected}' in:\n{output}");
    }
}
