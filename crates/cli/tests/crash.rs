//! The crash test: a child process runs the writer under load while this driver records every
//! acknowledged event; the child is killed with SIGKILL at random moments, restarted, sent
//! everything again with the same ids, and then the books are checked. Rounds: 20 by default,
//! more with `CITYPAY_CRASH_ROUNDS`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use citypay_store::{JournalSource, audit};
use citypay_store_sqlite::SqliteStore;

const WALLETS: u64 = 10;
const FUNDING: i64 = 1_000_000;

#[derive(Clone, Copy, Debug)]
struct Sent {
    debit: u64,
    credit: u64,
    amount: i64,
}

/// The driver's record: what was sent and the first answer of each id.
#[derive(Default)]
struct Record {
    sent: BTreeMap<u128, Sent>,
    first: BTreeMap<u128, String>,
    acknowledged_before_a_kill: usize,
}

struct Child_ {
    child: Child,
    stdin: ChildStdin,
    acks: mpsc::Receiver<String>,
    _kill: KillOnDrop,
}

/// Kills the child if the test fails while it runs.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = Command::new("kill").args(["-9", &self.0.to_string()]).status();
        }
    }
}

fn spawn(db: &Path) -> Child_ {
    let mut child = Command::new(env!("CARGO_BIN_EXE_citypay"))
        .args(["crash-child", "--db"])
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the child");
    let stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, acks) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let kill = KillOnDrop(child.id());
    let ready = acks.recv_timeout(Duration::from_secs(30)).expect("the child starts");
    assert_eq!(ready, "ready");
    Child_ { child, stdin, acks, _kill: kill }
}

fn line(id: u128, s: &Sent) -> String {
    if s.amount == 0 {
        format!("ACCOUNT {}\n", s.debit)
    } else {
        format!("{id} {} {} {}\n", s.debit, s.credit, s.amount)
    }
}

/// Checks one acknowledgement against the record: a known id must be a replay of its first
/// answer; a new one becomes the first answer.
fn take_ack(record: &mut Record, ack: &str) -> Option<u128> {
    let fields: Vec<&str> = ack.split_whitespace().collect();
    let id: u128 = fields[0].parse().expect("ack id");
    if fields[1] == "error" {
        return None;
    }
    let (status, replay) = (fields[1].to_owned(), fields[2] == "true");
    match record.first.get(&id) {
        Some(first) => {
            assert!(replay, "id {id} was answered before ({first}) but not as a replay: {ack}");
            assert_eq!(&status, first, "id {id}: a re-send must answer the first result");
        }
        None => {
            record.first.insert(id, status);
        }
    }
    Some(id)
}

/// Sends every recorded event again and waits for all the answers.
fn resend_all(child: &mut Child_, record: &mut Record) {
    let mut batch = String::new();
    for (id, s) in &record.sent {
        batch += &line(*id, s);
    }
    child.stdin.write_all(batch.as_bytes()).unwrap();
    child.stdin.flush().unwrap();
    let mut pending = record.sent.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while pending > 0 {
        let ack = child.acks.recv_timeout(deadline - Instant::now()).expect("every re-send is answered");
        if take_ack(record, &ack).is_some() {
            pending -= 1;
        }
    }
}

fn accounts_and_funding(record: &mut Record) {
    // Account events answer under the account's id; funding transfers use ids from 100.
    record.sent.insert(1, Sent { debit: 1, credit: 0, amount: 0 });
    for wallet in 2..WALLETS + 2 {
        record.sent.insert(u128::from(wallet), Sent { debit: wallet, credit: 0, amount: 0 });
        record.sent.insert(100 + u128::from(wallet), Sent { debit: 1, credit: wallet, amount: FUNDING });
    }
}

#[test]
fn acknowledged_transfers_survive_sigkill() {
    let rounds: usize = std::env::var("CITYPAY_CRASH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let mut record = Record::default();
    let mut rng = fastrand::Rng::with_seed(rounds as u64);
    let mut next_id: u128 = 1_000;
    // Account creation has no rejections to remember, so open accounts first and in order.
    {
        let mut child = spawn(&db);
        let mut opening = Record::default();
        accounts_and_funding(&mut opening);
        let (accounts, funding): (Vec<_>, Vec<_>) = opening.sent.into_iter().partition(|(_, s)| s.amount == 0);
        record.sent.extend(accounts);
        resend_all(&mut child, &mut record);
        record.sent.extend(funding);
        resend_all(&mut child, &mut record);
        child.child.kill().unwrap();
        child.child.wait().unwrap();
    }
    for _ in 0..rounds {
        let mut child = spawn(&db);
        resend_all(&mut child, &mut record);
        // New load from a separate thread until the kill.
        let stop = Arc::new(AtomicBool::new(false));
        let sent_now = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let (stop, sent_now) = (stop.clone(), sent_now.clone());
            let mut stdin = child.stdin;
            let seed = rng.u64(..);
            let first_id = next_id;
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed);
                let mut id = first_id;
                while !stop.load(Ordering::Relaxed) {
                    let mut chunk = String::new();
                    let mut events = Vec::new();
                    for _ in 0..100 {
                        let debit = rng.u64(2..WALLETS + 2);
                        let credit = rng.u64(1..WALLETS + 2);
                        // Now and then more than a wallet holds: a rejection to remember.
                        let amount = if rng.u8(..) < 8 { FUNDING * 3 } else { rng.i64(1..5_000) };
                        let s = Sent { debit, credit, amount };
                        chunk += &line(id, &s);
                        events.push((id, s));
                        id += 1;
                    }
                    sent_now.lock().unwrap().extend(events.iter().copied());
                    if stdin.write_all(chunk.as_bytes()).and_then(|()| stdin.flush()).is_err() {
                        return id;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                id
            })
        };
        let kill_at = Instant::now() + Duration::from_millis(rng.u64(20..400));
        while Instant::now() < kill_at {
            if let Ok(ack) = child.acks.recv_timeout(Duration::from_millis(5)) {
                // Events sent this round are recorded before their acks can be read.
                let sent: Vec<(u128, Sent)> = std::mem::take(&mut *sent_now.lock().unwrap());
                record.sent.extend(sent);
                take_ack(&mut record, &ack);
            }
        }
        child.child.kill().unwrap();
        child.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        next_id = writer.join().unwrap();
        record.sent.extend(std::mem::take(&mut *sent_now.lock().unwrap()));
        // Acks printed before the kill still count as acknowledged.
        while let Ok(ack) = child.acks.recv_timeout(Duration::from_millis(200)) {
            take_ack(&mut record, &ack);
        }
        record.acknowledged_before_a_kill = record.first.len();
    }
    // A last clean run: everything answered, then the books.
    let mut child = spawn(&db);
    resend_all(&mut child, &mut record);
    drop(child.stdin);
    assert!(child.child.wait().unwrap().success());
    check_books(&db, &record);
    assert!(record.acknowledged_before_a_kill > 0);
    eprintln!("{rounds} kills, {} events, {} acknowledged before a kill", record.sent.len(), record.acknowledged_before_a_kill);
}

fn check_books(db: &Path, record: &Record) {
    let mut expected: BTreeMap<u64, i64> = BTreeMap::new();
    let mut ok_transfers = 0i64;
    for (id, s) in &record.sent {
        let status = record.first.get(id).unwrap_or_else(|| panic!("id {id} never answered"));
        if s.amount > 0 && status == "ok" {
            ok_transfers += 1;
            *expected.entry(s.debit).or_default() -= s.amount;
            *expected.entry(s.credit).or_default() += s.amount;
        }
    }
    let mut reader = SqliteStore::open_reader(db).unwrap();
    let report = audit(&mut reader).unwrap();
    assert!(report.is_clean(), "{:?}", report.violations);
    let rows: i64 = reader.connection().query_row("SELECT count(*) FROM transfers", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, ok_transfers, "every ok transfer is stored exactly once");
    for account in reader.accounts().unwrap() {
        let want = expected.get(&account.id).copied().unwrap_or(0);
        assert_eq!(account.balance.net_posted(), want, "account {}", account.id);
    }
}
