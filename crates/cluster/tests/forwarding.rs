//! Two servers in one process: one with the writer, one forwarding to it over the cluster's
//! TLS. The forwarded commands get the writer's answers; rows, guards and events cross the
//! wire intact; a server without the key set's CA cannot join; and when the writer goes,
//! the commands in flight are never acknowledged.

use std::sync::Arc;
use std::time::Duration;

use citypay_cluster::{ClusterTls, CommandListener, Forwarder, LocalWriter, Route, router};
use citypay_ledger::{AccountFlags, Currency, Event, Leg, Limits, NewAccount, Status, Transfer};
use citypay_shard::{Command, Guard, Shard, ShardConfig, ShardHandle, SubmitError, SystemClock};
use citypay_store::{Migration, OnConflict, ServiceRow, Value};
use citypay_store_sqlite::SqliteStore;
use tokio::sync::watch;

const NOTES: Migration = Migration {
    component: "cluster_test",
    version: 1,
    name: "notes",
    sqlite: "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
    postgres: "CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL);",
};

fn account(id: u64, flags: AccountFlags) -> Command {
    Event::CreateAccount(NewAccount { id, currency: Currency::CNY, flags, code: 1, limits: Limits::NONE }).into()
}

fn note(id: i64) -> ServiceRow {
    ServiceRow { table: "notes", key: vec![("id", Value::Int(id))], columns: vec![("body", Value::Text(format!("note {id}")))], on_conflict: OnConflict::Fail }
}

/// A server that forwards everything to the writer at `address`.
fn member(tls: &ClusterTls, address: String, epoch: i64) -> ShardHandle {
    let (handle, relay) = citypay_shard::relay(1_024, Duration::from_secs(5));
    let (_routes, receiver) = watch::channel(Route::Remote { address, epoch });
    std::mem::forget(_routes);
    router(relay, receiver, Arc::new(Forwarder::new(tls)));
    handle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_commands_get_the_writers_answers() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_writer(&dir.path().join("city.db"), &[NOTES]).unwrap();
    let shard = Shard::start(Box::new(store), ShardConfig::DEFAULT, SystemClock).unwrap();
    shard.set_epoch(7);
    let ca = ClusterTls::new_ca_key().unwrap();
    let writer_tls = ClusterTls::from_ca_key(&ca).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (role, roles) = watch::channel::<LocalWriter>(Some((shard.handle(), 7)));
    CommandListener::spawn(listener, &writer_tls, roles);

    let forwarding = member(&ClusterTls::from_ca_key(&ca).unwrap(), address.clone(), 7);
    // Each answer names the epoch of the writer that gave it.
    let (opened, epoch) = citypay_shard::watch_epoch(forwarding.submit(account(1, AccountFlags::NONE))).await;
    assert_eq!((opened.unwrap().status, epoch), (Status::Ok, Some(7)));
    assert_eq!(forwarding.submit(account(2, AccountFlags::NONE)).await.unwrap().status, Status::Ok);
    // A transfer with a row and a guard, many at once.
    let mut waiting = Vec::new();
    for i in 1..=200u64 {
        let forwarding = forwarding.clone();
        waiting.push(tokio::spawn(async move {
            let transfer = Event::Transfer(Transfer {
                id: u128::from(1_000 + i),
                leg: Leg { debit: 1, credit: 2, amount: 5, currency: Currency::CNY, code: 1, class: 0, user_data: i },
                pending_timeout_s: None,
            });
            let key = vec![("id", Value::Int(i64::try_from(i).unwrap()))];
            let command = Command { event: Some(transfer), guards: vec![Guard::Absent { table: "notes", key }], rows: vec![note(i64::try_from(i).unwrap())], always_rows: Vec::new() };
            forwarding.submit(command).await
        }));
    }
    for waited in waiting {
        assert_eq!(waited.await.unwrap().unwrap().status, Status::Ok);
    }
    // The same guard again fails, on the writer, and says which guard.
    let again = Command { event: None, guards: vec![Guard::Absent { table: "notes", key: vec![("id", Value::Int(3))] }], rows: vec![note(3)], always_rows: Vec::new() };
    assert_eq!(forwarding.submit(again).await, Err(SubmitError::GuardFailed { guard: 0 }));
    // Reads come from the writer's memory.
    let payer = forwarding.account(1).await.unwrap().unwrap();
    assert_eq!(payer.balance.debits_posted, 1_000);
    assert_eq!(shard.handle().account(2).await.unwrap().unwrap().balance.credits_posted, 1_000);

    // A server whose key set has another CA is not let in.
    let stranger = member(&ClusterTls::from_ca_key(&ClusterTls::new_ca_key().unwrap()).unwrap(), address.clone(), 7);
    assert_eq!(stranger.submit(account(9, AccountFlags::NONE)).await, Err(SubmitError::Unavailable));
    assert!(shard.handle().account(9).await.unwrap().is_none());

    // The writer stops being the writer: the connection closes, and nothing more is answered ok.
    role.send(None).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = forwarding.submit(account(10, AccountFlags::NONE)).await;
    assert!(matches!(refused, Err(SubmitError::Unavailable | SubmitError::CommitFailed(_))), "{refused:?}");
    assert!(shard.handle().account(10).await.unwrap().is_none());
    shard.shutdown();
}

#[test]
fn names_off_the_wire_must_be_identifiers() {
    assert!(citypay_store::names::intern("trade_rows").is_ok());
    assert_eq!(citypay_store::names::intern("notes").unwrap().as_ptr(), citypay_store::names::intern("notes").unwrap().as_ptr());
    for bad in ["", "notes; DROP TABLE x", "Notes", "1a", "a-b"] {
        assert!(citypay_store::names::intern(bad).is_err(), "{bad:?}");
    }
}
