//! Recomputes the books from the journal and compares them with what is stored.

use std::collections::BTreeMap;

use citypay_ledger::{AccountId, Balance, Currency, EventId, JournalKind, PendingState};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::{JournalSource, StoreError, StoredRow};

/// The result of an audit: counts, and every violation found (empty when the books are clean).
#[derive(Debug, Default)]
pub struct AuditReport {
    /// Accounts checked.
    pub accounts: usize,
    /// Journal rows read.
    pub journal_rows: usize,
    /// Stored rejections read.
    pub rejections: usize,
    /// Posted balance per currency (credits minus debits); zero when clean.
    pub currency_sums: BTreeMap<String, i128>,
    /// What is wrong, one line each.
    pub violations: Vec<String>,
}

impl AuditReport {
    /// Whether the books are clean.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

#[derive(Clone, Copy)]
struct PendingRow {
    debit: AccountId,
    credit: AccountId,
    amount: i64,
    state: Option<PendingState>,
    deadline: Option<citypay_ledger::Timestamp>,
}

/// Recomputes every account's balances from the journal and checks: they equal the stored
/// balances; every currency sums to zero; no account breaks its flags; every row names existing
/// accounts of its currency; every post and void points at an existing pending transfer whose
/// state agrees; an entry's legs are numbered from 0 without gaps; no id is both a transfer and
/// a rejection.
pub fn audit(source: &mut dyn JournalSource) -> Result<AuditReport, StoreError> {
    let mut report = AuditReport::default();
    let accounts = source.accounts()?;
    report.accounts = accounts.len();
    let currencies: FxHashMap<AccountId, Currency> =
        accounts.iter().map(|a| (a.id, a.currency)).collect();
    let mut computed: FxHashMap<AccountId, Balance> = FxHashMap::default();
    let mut pendings: FxHashMap<EventId, PendingRow> = FxHashMap::default();
    let mut resolutions: Vec<(EventId, JournalKind, StoredRow)> = Vec::new();
    let mut transfer_ids: FxHashSet<EventId> = FxHashSet::default();
    let mut previous: Option<(EventId, u16)> = None;
    let violations = &mut report.violations;
    let mut rows = 0usize;
    source.scan_journal(&mut |stored: StoredRow| {
        rows += 1;
        let row = stored.row;
        let expected_leg = match previous {
            // Tampered rows may hold anything: no arithmetic here may overflow.
            Some((id, leg)) if id == row.id => leg.saturating_add(1),
            _ => 0,
        };
        if row.leg_index != expected_leg {
            violations.push(format!("transfer {}: leg {} follows leg {expected_leg:?}", row.id, row.leg_index));
        }
        previous = Some((row.id, row.leg_index));
        transfer_ids.insert(row.id);
        for account in [row.leg.debit, row.leg.credit] {
            match currencies.get(&account) {
                None => violations.push(format!("transfer {}: account {account} does not exist", row.id)),
                Some(c) if *c != row.leg.currency => violations.push(format!(
                    "transfer {}: {} on account {account} held in {c}",
                    row.id, row.leg.currency
                )),
                Some(_) => {}
            }
        }
        if row.leg.amount <= 0 {
            violations.push(format!("transfer {}: amount {}", row.id, row.leg.amount));
        }
        match row.kind {
            JournalKind::Posted => post_amount(&mut computed, row.leg.debit, row.leg.credit, row.leg.amount),
            JournalKind::Pending => {
                let pending = PendingRow {
                    debit: row.leg.debit,
                    credit: row.leg.credit,
                    amount: row.leg.amount,
                    state: stored.state,
                    deadline: row.deadline,
                };
                if stored.state == Some(PendingState::Open) {
                    let debit = computed.entry(row.leg.debit).or_default();
                    debit.debits_pending = debit.debits_pending.saturating_add(row.leg.amount);
                    let credit = computed.entry(row.leg.credit).or_default();
                    credit.credits_pending = credit.credits_pending.saturating_add(row.leg.amount);
                }
                if stored.state.is_none() {
                    violations.push(format!("pending transfer {} has no state", row.id));
                }
                pendings.insert(row.id, pending);
            }
            JournalKind::PostPending => {
                post_amount(&mut computed, row.leg.debit, row.leg.credit, row.leg.amount);
                resolutions.push((row.pending_id, row.kind, stored));
            }
            JournalKind::VoidPending => resolutions.push((row.pending_id, row.kind, stored)),
        }
    })?;
    report.journal_rows = rows;
    check_resolutions(&pendings, &resolutions, &mut report.violations);
    // Expiry writes no row of its own: an expired hold must at least have had a deadline (a
    // hold that only the bank's answer closes never expires).
    for (id, pending) in &pendings {
        if pending.state == Some(PendingState::Expired) && pending.deadline.is_none() {
            report.violations.push(format!("pending transfer {id} is expired but had no deadline"));
        }
    }
    let mut rejections = 0usize;
    let violations = &mut report.violations;
    source.scan_rejections(&mut |id| {
        rejections += 1;
        if transfer_ids.contains(&id) {
            violations.push(format!("event {id} is stored both as a transfer and as a rejection"));
        }
    })?;
    report.rejections = rejections;
    for account in &accounts {
        let recomputed = computed.get(&account.id).copied().unwrap_or_default();
        if recomputed != account.balance {
            report.violations.push(format!(
                "account {}: stored {:?}, journal gives {:?}",
                account.id, account.balance, recomputed
            ));
        }
        if let Some(problem) = account.flag_violation() {
            report.violations.push(format!("account {}: {problem}", account.id));
        }
        let b = &account.balance;
        let net = i128::from(b.credits_posted) - i128::from(b.debits_posted);
        *report.currency_sums.entry(account.currency.code().to_owned()).or_default() += net;
    }
    for (currency, sum) in &report.currency_sums {
        if *sum != 0 {
            report.violations.push(format!("{currency}: balances sum to {sum}, not 0"));
        }
    }
    Ok(report)
}

fn post_amount(computed: &mut FxHashMap<AccountId, Balance>, debit: AccountId, credit: AccountId, amount: i64) {
    // Saturating: an overflow from tampered amounts shows up as a mismatch, not a panic.
    let debit = computed.entry(debit).or_default();
    debit.debits_posted = debit.debits_posted.saturating_add(amount);
    let credit = computed.entry(credit).or_default();
    credit.credits_posted = credit.credits_posted.saturating_add(amount);
}

fn check_resolutions(
    pendings: &FxHashMap<EventId, PendingRow>,
    resolutions: &[(EventId, JournalKind, StoredRow)],
    violations: &mut Vec<String>,
) {
    let mut resolved: FxHashMap<EventId, PendingState> = FxHashMap::default();
    for (pending_id, kind, stored) in resolutions {
        let row = &stored.row;
        let Some(pending) = pendings.get(pending_id) else {
            violations.push(format!("transfer {} points at missing pending transfer {pending_id}", row.id));
            continue;
        };
        let state = if *kind == JournalKind::PostPending { PendingState::Posted } else { PendingState::Voided };
        if resolved.insert(*pending_id, state).is_some() {
            violations.push(format!("pending transfer {pending_id} resolved twice"));
        }
        if pending.state != Some(state) {
            violations.push(format!("pending transfer {pending_id} is {:?} but {} made it {state:?}", pending.state, row.id));
        }
        if (row.leg.debit, row.leg.credit) != (pending.debit, pending.credit) || row.leg.amount > pending.amount {
            violations.push(format!("transfer {} does not match pending transfer {pending_id}", row.id));
        }
    }
    for (id, pending) in pendings {
        let closed_by_row = matches!(pending.state, Some(PendingState::Posted | PendingState::Voided));
        if closed_by_row && !resolved.contains_key(id) {
            violations.push(format!("pending transfer {id} is {:?} but no row did that", pending.state));
        }
    }
}

#[cfg(test)]
mod tests {
    use citypay_ledger::{Account, AccountFlags, Currency, JournalKind, JournalRow, Leg, Limits, PendingState, Timestamp};

    use super::*;

    /// A journal held in memory.
    struct Journal {
        accounts: Vec<Account>,
        rows: Vec<StoredRow>,
    }

    impl JournalSource for Journal {
        fn accounts(&mut self) -> Result<Vec<Account>, StoreError> {
            Ok(self.accounts.clone())
        }
        fn scan_journal(&mut self, visit: &mut dyn FnMut(StoredRow)) -> Result<(), StoreError> {
            self.rows.iter().for_each(|r| visit(*r));
            Ok(())
        }
        fn scan_rejections(&mut self, _: &mut dyn FnMut(EventId)) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn account(id: u64) -> Account {
        Account {
            id,
            currency: Currency::CNY,
            flags: AccountFlags::NONE,
            code: 0,
            limits: Limits::NONE,
            opened_at: Timestamp(0),
            balance: Balance::default(),
            usage: Default::default(),
        }
    }

    #[test]
    fn a_hold_without_a_deadline_never_expires() {
        let leg = Leg { debit: 1, credit: 2, amount: 500, currency: Currency::CNY, code: 50, class: 0, user_data: 0 };
        let hold = |deadline| StoredRow {
            row: JournalRow { id: 7, leg_index: 0, kind: JournalKind::Pending, leg, pending_id: 0, deadline, timestamp: Timestamp(10), hash: 1 },
            state: Some(PendingState::Expired),
            batch: 1,
        };
        let mut journal = Journal { accounts: vec![account(1), account(2)], rows: vec![hold(None)] };
        let report = audit(&mut journal).unwrap();
        assert!(report.violations.iter().any(|v| v.contains("expired but had no deadline")), "{:?}", report.violations);
        journal.rows = vec![hold(Some(Timestamp(20)))];
        assert!(audit(&mut journal).unwrap().is_clean());
    }
}
