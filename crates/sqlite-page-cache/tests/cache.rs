//! Through real SQLite: random inserts (which make B-tree splits park pages under the
//! lock-byte page's number), rolled-back growth (whose pages a truncate must drop) and
//! deletes, checked row by row and by SQLite's own integrity check.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The first difference between the rows read and the rows expected, if any.
fn difference(conn: &Connection, expected: &BTreeMap<Vec<u8>, String>) -> Option<String> {
    let found = rows(conn);
    if found == *expected {
        return None;
    }
    let extra = found.iter().find(|(k, v)| expected.get(*k) != Some(v));
    let missing = expected.iter().find(|(k, v)| found.get(*k) != Some(v));
    Some(format!("{} rows, {} expected; read but not expected: {extra:?}; expected but not read: {missing:?}", found.len(), expected.len()))
}

fn rows(conn: &Connection) -> BTreeMap<Vec<u8>, String> {
    let mut select = conn.prepare("SELECT k, v FROM t ORDER BY k").unwrap();
    select.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

fn insert(conn: &Connection, random: &mut Random, expected: Option<&mut BTreeMap<Vec<u8>, String>>, count: usize) {
    let mut insert = conn.prepare_cached("INSERT INTO t (k, v) VALUES (?1, ?2)").unwrap();
    let mut added = Vec::new();
    for _ in 0..count {
        let key = random.next().to_be_bytes().to_vec();
        let value = format!("{:0>60}", random.next());
        insert.execute(params![key, value]).unwrap();
        added.push((key, value));
    }
    if let Some(expected) = expected {
        expected.extend(added);
    }
}

#[test]
fn random_inserts_rolled_back_growth_and_deletes_keep_every_row() {
    // The first use of SQLite in this process.
    assert!(citypay_sqlite_page_cache::install(), "installed before SQLite initialises");
    assert!(citypay_sqlite_page_cache::install(), "and stays installed");
    let before = citypay_sqlite_page_cache::truncates();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA cache_size = -65536;
         CREATE TABLE t (id INTEGER PRIMARY KEY, k BLOB NOT NULL UNIQUE, v TEXT NOT NULL);",
    )
    .unwrap();
    let mut random = Random(0x9E37_79B9_7F4A_7C15);
    let mut expected = BTreeMap::new();
    for round in 0..300 {
        conn.execute_batch("BEGIN").unwrap();
        insert(&conn, &mut random, Some(&mut expected), 60);
        if round % 5 == 0 {
            // Growth inside a savepoint, undone.
            conn.execute_batch("SAVEPOINT s").unwrap();
            insert(&conn, &mut random, None, 400);
            conn.execute_batch("ROLLBACK TO s; RELEASE s").unwrap();
        }
        if round % 9 == 0 {
            // Rows away, pages to the free list.
            let cut = random.next().to_be_bytes().to_vec();
            conn.execute("DELETE FROM t WHERE substr(k, 1, 1) = ?1", params![&cut[..1]]).unwrap();
            expected.retain(|k, _| k[0] != cut[0]);
        }
        conn.execute_batch("COMMIT").unwrap();
        if round % 7 == 0 {
            // A whole transaction's growth, rolled back: its pages lie past the end.
            conn.execute_batch("BEGIN").unwrap();
            insert(&conn, &mut random, None, 1_500);
            conn.execute_batch("ROLLBACK").unwrap();
        }
        if round % 50 == 49 {
            assert_eq!(difference(&conn, &expected), None, "round {round}");
        }
    }
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    assert_eq!(difference(&conn, &expected), None);
    drop(conn);
    let reopened = Connection::open(&path).unwrap();
    assert_eq!(difference(&reopened, &expected), None);

    let after = citypay_sqlite_page_cache::truncates();
    // The 240 commits with nothing past the end skip SQLite's scan; the 103 rollbacks of
    // growth (43 transactions, 60 savepoints) must not: their pages lie past the end.
    assert!(after.skipped - before.skipped >= 240, "{before:?} → {after:?}");
    assert!(after.passed_on - before.passed_on >= 103, "{before:?} → {after:?}");
}
