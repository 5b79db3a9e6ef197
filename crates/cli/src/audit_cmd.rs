//! `citypay audit`: the books recomputed from the journal; the journal's seals checked with the
//! key and the head kept outside the database; custody reconciled with the money held against
//! it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use citypay_directory::AccountKind;
use citypay_shard::seal::{SealCheck, SealKey};
use citypay_store::{DbUrl, ServiceReader};

/// Custody against the money held in it, from the stored balances (posted), in fen.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Custody {
    /// What the platform's custody accounts at the banks hold (the negated balance of their
    /// mirrors in the ledger).
    custody: i128,
    /// Residents' wallets.
    wallets: i128,
    /// Merchants' balances not yet settled.
    merchants: i128,
    /// Cities' medical-insurance funds.
    insurance_funds: i128,
    /// The platform's own fees, still in custody.
    fees: i128,
    /// What crossed to and from other shards, net (`citypay-clearing`): money a payer here
    /// sent to another shard is in this shard's custody still, in its clearing account.
    clearing: i128,
    /// Custody less everything held against it: zero when they agree.
    pub(crate) difference: i128,
}

pub(crate) fn custody(accounts: &[citypay_ledger::Account]) -> Custody {
    let mut c = Custody::default();
    for account in accounts {
        let net = i128::from(account.balance.net_posted());
        match account.code {
            code if code == AccountKind::Custody.code() => c.custody -= net,
            code if code == AccountKind::Wallet.code() => c.wallets += net,
            code if code == AccountKind::Merchant.code() => c.merchants += net,
            code if code == AccountKind::InsuranceFund.code() => c.insurance_funds += net,
            code if code == AccountKind::FeeRevenue.code() => c.fees += net,
            code if code == AccountKind::Clearing.code() => c.clearing += net,
            _ => {}
        }
    }
    c.difference = c.custody - (c.wallets + c.merchants + c.insurance_funds + c.fees + c.clearing);
    c
}

/// What the seal check found: `None` when there is no key to check with.
/// `head` was read before `source` began its snapshot; the seals are read after it. So a
/// batch that commits meanwhile is seen in full or not at all (its rows and its seal commit
/// together, and its head is written after).
fn seals(db: &DbUrl, keys: &Path, head: Option<citypay_shard::seal::Head>, source: &mut dyn citypay_store::JournalSource) -> anyhow::Result<Option<(usize, Vec<String>)>> {
    let Some(key) = crate::city::journal_key(keys)? else { return Ok(None) };
    let key = SealKey::new(key);
    let reader: Box<dyn ServiceReader> = match db {
        DbUrl::Sqlite(path) => Box::new(citypay_store_sqlite::SqliteReader::open(path)?),
        DbUrl::Postgres(url) => Box::new(citypay_store_postgres::PostgresReader::connect(url)?),
    };
    let mut check = SealCheck::default();
    source.scan_journal(&mut |row| check.add(&key, row.batch, &row.row))?;
    let stored = crate::city::stored_seals(reader.as_ref(), crate::city::Seals::All).context("reading the journal's seals")?;
    if stored.is_empty() && head.is_none() {
        return Ok(None);
    }
    let problems = check.verify(&key, &stored, head.as_ref());
    let first = head.map_or_else(|| stored.first().map_or(1, |s| s.batch), |h| h.first);
    let legacy = check.unsealed_before(first);
    if legacy > 0 {
        eprintln!("note: {legacy} journal rows predate the first sealed batch ({first}) and cannot be checked");
    }
    Ok(Some((stored.len(), problems)))
}

pub(crate) fn run(db: &DbUrl, keys: Option<&Path>, etcd: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let key_path = keys.map_or_else(|| crate::city::default_keys_path(db), Path::to_path_buf);
    let head_store = match (etcd, db) {
        (Some(etcd), DbUrl::Postgres(url)) => crate::seal_head::HeadStore::etcd(crate::etcd::Etcd::new(etcd)?, url),
        (Some(_), DbUrl::Sqlite(_)) => anyhow::bail!("--etcd holds the seal head of a city on PostgreSQL"),
        (None, _) => crate::seal_head::HeadStore::File(crate::city::seal_head_path(&key_path)),
    };
    // The head before the journal's snapshot begins (see `seals`).
    let head = head_store.read()?;
    let mut source = crate::open::reader(db)?;
    let mut report = citypay_store::audit(source.as_mut())?;
    let custody = custody(&source.accounts()?);
    if custody.difference != 0 {
        report.violations.push(format!("custody holds {} fen but {} fen is held against it", custody.custody, custody.custody - custody.difference));
    }
    let sealed = seals(db, &key_path, head, source.as_mut())?;
    if let Some((_, problems)) = &sealed {
        report.violations.extend(problems.iter().cloned());
    }
    if json {
        let value = serde_json::json!({
            "clean": report.is_clean(),
            "accounts": report.accounts,
            "journal_rows": report.journal_rows,
            "rejections": report.rejections,
            "currency_sums": report.currency_sums.iter().map(|(c, s)| (c.clone(), s.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
            "custody": custody,
            "sealed_batches": sealed.as_ref().map(|(n, _)| *n),
            "violations": report.violations,
        });
        say!("{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        say!("{}: {} accounts, {} journal rows, {} rejections", db.redacted(), report.accounts, report.journal_rows, report.rejections)?;
        for (currency, sum) in &report.currency_sums {
            say!("  {currency}: balances sum to {sum}")?;
        }
        say!(
            "  custody {} fen = wallets {} + merchants {} + insurance funds {} + fees {} + clearing with other shards {} (difference {})",
            custody.custody, custody.wallets, custody.merchants, custody.insurance_funds, custody.fees, custody.clearing, custody.difference
        )?;
        match &sealed {
            Some((n, _)) => say!("  journal seals: {n} batches checked against the key and the head")?,
            None => say!("  journal seals: not checked (no key file at {})", key_path.display())?,
        }
        if report.is_clean() {
            say!("the books are clean")?;
        } else {
            say!("{} violations:", report.violations.len())?;
            for v in &report.violations {
                say!("  {v}")?;
            }
        }
    }
    Ok(if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[cfg(test)]
mod tests {
    use citypay_directory::AccountKind;
    use citypay_ledger::{Account, AccountFlags, Balance, Currency, Limits, Timestamp};

    fn account(kind: AccountKind, debits: i64, credits: i64) -> Account {
        Account {
            id: citypay_directory::account_id(kind, 1),
            currency: Currency::CNY,
            flags: AccountFlags::NONE,
            code: kind.code(),
            limits: Limits::NONE,
            opened_at: Timestamp(0),
            balance: Balance { debits_posted: debits, credits_posted: credits, ..Balance::default() },
            usage: Default::default(),
        }
    }

    #[test]
    fn money_sent_to_another_shard_is_custody_held_in_clearing() {
        // A top-up of 100 here; 30 of it sent to a resident of another shard (wallet → clearing).
        let payer_shard = [account(AccountKind::Custody, 100, 0), account(AccountKind::Wallet, 30, 100), account(AccountKind::Clearing, 0, 30)];
        let c = super::custody(&payer_shard);
        assert_eq!((c.custody, c.wallets, c.clearing, c.difference), (100, 70, 30, 0));
        // The other shard credited its resident from its clearing account: no custody moved.
        let payee_shard = [account(AccountKind::Wallet, 0, 30), account(AccountKind::Clearing, 30, 0)];
        let c = super::custody(&payee_shard);
        assert_eq!((c.custody, c.wallets, c.clearing, c.difference), (0, 30, -30, 0));
    }
}
