//! Journal seals: each batch's journal rows are sealed with a MAC chained to the previous
//! batch's, under a key kept outside the database, and the newest seal (the head) is handed to
//! the caller to keep outside the database too. Someone with write access to the database alone
//! cannot edit, delete or add a journal row, or cut off the tail, without the audit noticing.
//!
//! A batch's seal is HMAC-SHA256(key, previous seal ‖ batch ‖ row count ‖ Σ tags), where each
//! row's tag is a keyed SipHash-1-3 (128-bit) of the row's stored fields and Σ adds tags modulo
//! 2^128. The sum makes the seal independent of the order rows are read back in (the audit
//! scans the journal by id, not by batch); each tag is keyed, so the sum cannot be steered. A
//! pending row's `state` changes after its batch and is not sealed; the posts and voids that
//! change it are.

use std::hash::Hasher;

use citypay_ledger::JournalRow;
use citypay_store::{Migration, OnConflict, ServiceRow, Value};
use hmac::{KeyInit, Mac};
use rustc_hash::FxHashMap;
use siphasher::sip128::{Hasher128, SipHasher13};

/// The seals' table.
pub const MIGRATIONS: &[Migration] = &[Migration {
    component: "journal_seals",
    version: 1,
    name: "a chained MAC per batch of the journal",
    sqlite: "CREATE TABLE journal_seals (batch BIGINT PRIMARY KEY, rows BIGINT NOT NULL, mac BLOB NOT NULL);",
    postgres: "CREATE TABLE journal_seals (batch BIGINT PRIMARY KEY, rows BIGINT NOT NULL, mac BYTEA NOT NULL);",
}];

/// The secret the seals are made with. Keep it outside the database.
#[derive(Clone)]
pub struct SealKey([u8; 32]);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

/// One batch's seal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seal {
    /// The batch.
    pub batch: u64,
    /// Its journal rows.
    pub rows: u64,
    /// The chained MAC.
    pub mac: [u8; 32],
}

/// Where the newest seal is kept outside the database (a file beside it, a log), with the
/// first sealed batch, so that neither end of the chain can be cut off unnoticed.
pub trait SealHead: Send {
    /// Called after each batch commits, with its seal and the first sealed batch.
    fn sealed(&mut self, seal: &Seal, first: u64);
}

/// The head as kept outside the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// The newest seal.
    pub seal: Seal,
    /// The first sealed batch (batches before it predate sealing).
    pub first: u64,
    /// The sealing key's [`SealKey::check_value`].
    pub key_check: [u8; 8],
}

impl SealKey {
    /// The key from its 32 bytes.
    pub fn new(bytes: [u8; 32]) -> SealKey {
        SealKey(bytes)
    }

    /// A short value that tells this key from another without revealing it: kept with the head,
    /// so a key file that lost its key (and got a new one) is caught before anything is sealed
    /// under the wrong key.
    pub fn check_value(&self) -> [u8; 8] {
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"citypay journal seal key check");
        let digest = mac.finalize().into_bytes();
        let mut check = [0u8; 8];
        check.copy_from_slice(&digest[..8]);
        check
    }

    /// A row's tag.
    pub fn tag(&self, row: &JournalRow) -> u128 {
        let (k0, k1) = self.sip_keys();
        let mut h = SipHasher13::new_with_keys(k0, k1);
        h.write(&row.id.to_le_bytes());
        h.write_u16(row.leg_index);
        h.write_u8(row.kind as u8);
        h.write_u64(row.leg.debit);
        h.write_u64(row.leg.credit);
        h.write_i64(row.leg.amount);
        h.write(row.leg.currency.code().as_bytes());
        h.write_u16(row.leg.code);
        h.write_u8(row.leg.class);
        h.write_u64(row.leg.user_data);
        h.write(&row.pending_id.to_le_bytes());
        h.write_u64(row.deadline.map_or(u64::MAX, |d| d.0));
        h.write_u64(row.timestamp.0);
        h.write_u64(row.hash);
        h.finish128().as_u128()
    }

    fn sip_keys(&self) -> (u64, u64) {
        let mut k0 = [0u8; 8];
        let mut k1 = [0u8; 8];
        k0.copy_from_slice(&self.0[..8]);
        k1.copy_from_slice(&self.0[8..16]);
        (u64::from_le_bytes(k0), u64::from_le_bytes(k1))
    }

    /// The seal of a batch, chained to the previous seal's MAC (zeros before the first).
    pub fn seal(&self, previous: &[u8; 32], batch: u64, rows: u64, tag_sum: u128) -> Seal {
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(previous);
        mac.update(&batch.to_le_bytes());
        mac.update(&rows.to_le_bytes());
        mac.update(&tag_sum.to_le_bytes());
        Seal { batch, rows, mac: mac.finalize().into_bytes().into() }
    }

    /// A batch's seal from its journal rows.
    pub fn seal_rows(&self, previous: &[u8; 32], batch: u64, journal: &[JournalRow]) -> Seal {
        let sum = journal.iter().fold(0u128, |sum, row| sum.wrapping_add(self.tag(row)));
        self.seal(previous, batch, journal.len() as u64, sum)
    }
}

/// The seal's row, written in the batch's own transaction.
pub(crate) fn seal_row(seal: &Seal) -> ServiceRow {
    ServiceRow {
        table: "journal_seals",
        key: vec![("batch", Value::Int(i64::try_from(seal.batch).unwrap_or(i64::MAX)))],
        columns: vec![("rows", Value::Int(i64::try_from(seal.rows).unwrap_or(i64::MAX))), ("mac", Value::Blob(seal.mac.to_vec()))],
        on_conflict: OnConflict::Fail,
    }
}

/// The writer's sealing state: the key, the newest committed seal, where the head goes.
pub struct Sealer {
    pub(crate) key: SealKey,
    pub(crate) last: Option<Seal>,
    pub(crate) first: Option<u64>,
    pub(crate) head: Box<dyn SealHead>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("last", &self.last.map(|s| s.batch)).finish_non_exhaustive()
    }
}

impl Sealer {
    /// Seals with `key` after `last`, the newest seal in the database, whose first sealed
    /// batch is `first` (neither in a database not sealed yet).
    pub fn new(key: SealKey, last: Option<Seal>, first: Option<u64>, head: Box<dyn SealHead>) -> Sealer {
        Sealer { key, last, first, head }
    }

    pub(crate) fn committed(&mut self, seal: Seal) {
        let first = *self.first.get_or_insert(seal.batch);
        self.last = Some(seal);
        self.head.sealed(&seal, first);
    }

    pub(crate) fn previous_mac(&self) -> [u8; 32] {
        self.last.map_or([0; 32], |s| s.mac)
    }
}

/// Accumulates the journal's rows by batch while the audit scans it.
#[derive(Debug, Default)]
pub struct SealCheck {
    batches: FxHashMap<u64, (u64, u128)>,
}

impl SealCheck {
    /// Counts a stored row of `batch`.
    pub fn add(&mut self, key: &SealKey, batch: u64, row: &JournalRow) {
        let entry = self.batches.entry(batch).or_default();
        entry.0 += 1;
        entry.1 = entry.1.wrapping_add(key.tag(row));
    }

    /// Checks the stored seals (by batch, ascending) against the rows counted and the head
    /// kept outside the database; answers what is wrong, one line each. Seals of batches after
    /// the newest row counted and the head are left out: they committed after the journal was
    /// read (read the head first, then the journal, then the seals).
    pub fn verify(&self, key: &SealKey, seals: &[Seal], head: Option<&Head>) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(head) = head
            && head.key_check != key.check_value()
        {
            problems.push("the journal key is not the one that sealed the journal (see the head kept outside the database)".to_owned());
            return problems;
        }
        let newest_row = self.batches.keys().copied().max().unwrap_or(0);
        let horizon = newest_row.max(head.map_or(0, |h| h.seal.batch));
        let seals: Vec<&Seal> = seals.iter().filter(|s| s.batch <= horizon).collect();
        let first = head.map(|h| h.first).or_else(|| seals.first().map(|s| s.batch)).unwrap_or(u64::MAX);
        if let (Some(head), Some(stored)) = (head, seals.first())
            && stored.batch != head.first
        {
            problems.push(format!("the journal's seals begin at batch {} but sealing began at batch {}", stored.batch, head.first));
        }
        let mut previous = [0u8; 32];
        for (i, seal) in seals.iter().enumerate() {
            if i > 0 && seal.batch != seals[i - 1].batch + 1 {
                problems.push(format!("journal seals skip from batch {} to {}", seals[i - 1].batch, seal.batch));
            }
            let (rows, sum) = self.batches.get(&seal.batch).copied().unwrap_or_default();
            let expected = key.seal(&previous, seal.batch, rows, sum);
            if expected.mac != seal.mac {
                problems.push(format!(
                    "batch {}: the journal rows ({rows} stored, {} sealed) do not match the batch's seal",
                    seal.batch, seal.rows
                ));
            }
            previous = seal.mac;
        }
        let sealed: rustc_hash::FxHashSet<u64> = seals.iter().map(|s| s.batch).collect();
        // Batches are numbered from 1, so a row of batch 0 was never written by a writer.
        let mut unsealed: Vec<u64> = self.batches.keys().copied().filter(|b| (*b >= first || *b == 0) && !sealed.contains(b)).collect();
        unsealed.sort_unstable();
        if let Some(b) = unsealed.first() {
            problems.push(format!("journal rows of {} batches have no seal (first: batch {b})", unsealed.len()));
        }
        match (head, seals.last()) {
            (Some(head), Some(last)) if head.seal.batch > last.batch => problems.push(format!(
                "the journal ends at batch {} but the head kept outside the database is batch {}: its tail was cut off",
                last.batch, head.seal.batch
            )),
            (Some(head), None) => {
                problems.push(format!("the journal has no seals but the head kept outside the database is batch {}", head.seal.batch));
            }
            (Some(head), Some(_)) => match seals.iter().find(|s| s.batch == head.seal.batch) {
                Some(stored) if stored.mac == head.seal.mac => {}
                _ => problems.push(format!("batch {}: the seal differs from the head kept outside the database", head.seal.batch)),
            },
            (None, Some(_)) => problems.push("the journal is sealed but no head is kept outside the database".to_owned()),
            (None, None) => {}
        }
        problems
    }

    /// Rows of batches before sealing began: they cannot be checked.
    pub fn unsealed_before(&self, first: u64) -> u64 {
        self.batches.iter().filter(|(b, _)| **b > 0 && **b < first).map(|(_, (rows, _))| rows).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use citypay_ledger::{Currency, JournalKind, Leg, Timestamp};

    fn row(id: u128, amount: i64) -> JournalRow {
        JournalRow {
            id,
            leg_index: 0,
            kind: JournalKind::Posted,
            leg: Leg { debit: 1, credit: 2, amount, currency: Currency::CNY, code: 20, class: 0, user_data: 7 },
            pending_id: 0,
            deadline: None,
            timestamp: Timestamp(5),
            hash: 9,
        }
    }

    #[test]
    fn seals_chain_and_catch_edits_deletions_and_a_cut_tail() {
        let key = SealKey::new([3; 32]);
        let batches = [vec![row(1, 100), row(2, 200)], vec![row(3, 300)], vec![]];
        let mut seals = Vec::new();
        let mut previous = [0u8; 32];
        for (i, rows) in batches.iter().enumerate() {
            let seal = key.seal_rows(&previous, i as u64 + 1, rows);
            previous = seal.mac;
            seals.push(seal);
        }
        let check = |stored: &[(u64, JournalRow)], seals: &[Seal], head: Option<&Head>| {
            let mut check = SealCheck::default();
            for (batch, row) in stored {
                check.add(&key, *batch, row);
            }
            check.verify(&key, seals, head)
        };
        let head = Head { seal: seals[2], first: 1, key_check: key.check_value() };
        let stored = vec![(2, row(3, 300)), (1, row(2, 200)), (1, row(1, 100))];
        assert!(check(&stored, &seals, Some(&head)).is_empty(), "any order of rows verifies");
        let edited = vec![(2, row(3, 301)), (1, row(2, 200)), (1, row(1, 100))];
        assert_eq!(check(&edited, &seals, Some(&head)).len(), 1);
        let deleted = vec![(2, row(3, 300)), (1, row(1, 100))];
        assert_eq!(check(&deleted, &seals, Some(&head)).len(), 1);
        let cut = &seals[..1];
        assert!(check(&stored[1..], cut, Some(&head)).iter().any(|p| p.contains("cut off")));
        let early_cut = &seals[1..];
        assert!(check(&stored[..1], early_cut, Some(&head)).iter().any(|p| p.contains("begin at batch 2")));
        let inserted = vec![(2, row(3, 300)), (1, row(2, 200)), (1, row(1, 100)), (0, row(9, 900))];
        assert!(check(&inserted, &seals, Some(&head)).iter().any(|p| p.contains("no seal")), "a row of batch 0 is never a writer's");
        let other = SealKey::new([4; 32]);
        let forged: Vec<Seal> = seals.iter().map(|s| Seal { mac: other.seal(&[0; 32], s.batch, s.rows, 0).mac, ..*s }).collect();
        assert!(!check(&stored, &forged, Some(&head)).is_empty(), "seals made without the key do not verify");
        let wrong_key = Head { key_check: other.check_value(), ..head };
        assert!(check(&stored, &seals, Some(&wrong_key)).iter().any(|p| p.contains("not the one")));
        // A batch that committed after the journal was read is not held against it.
        let later = key.seal_rows(&seals[2].mac, 4, &[row(4, 400)]);
        let with_later: Vec<Seal> = seals.iter().copied().chain([later]).collect();
        assert!(check(&stored, &with_later, Some(&head)).is_empty());
    }
}
