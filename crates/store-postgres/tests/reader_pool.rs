//! The services' reader keeps at most 24 connections open: a burst of reads waits for one
//! rather than opening connections until PostgreSQL refuses every client. Needs a server: run
//! through `scripts/with-postgres.sh` (skipped without one, except under `CI=true`).

mod common;

use std::sync::Arc;

use citypay_store::ServiceReader;
use citypay_store_postgres::PostgresReader;
use common::Server;

#[test]
fn a_burst_of_reads_waits_for_the_readers_connections() {
    let Some(mut server) = Server::connect() else { return };
    let url = server.create_database("citypay_reader_pool");
    let reader = Arc::new(PostgresReader::connect(&url).unwrap());
    // 80 reads at once, each holding its connection for a while.
    let reads: Vec<_> = (0..80)
        .map(|_| {
            let reader = reader.clone();
            // Client backends only: an autovacuum worker on the new database is no reader's.
            std::thread::spawn(move || {
                reader.query(
                    "SELECT (SELECT 1 FROM pg_sleep(0.2)), COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'",
                    &[],
                )
            })
        })
        .collect();
    let mut most = 0;
    for read in reads {
        let rows = read.join().unwrap().unwrap();
        let citypay_store::Value::Int(open) = rows[0][1] else { panic!("{rows:?}") };
        most = most.max(open);
    }
    assert!(most <= 24, "{most} connections were open at once");
    assert!(most >= 8, "reads ran side by side ({most} connections)");
    drop(reader);
}
