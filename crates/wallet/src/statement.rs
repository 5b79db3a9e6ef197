//! A resident's wallet statement: every posted movement of the wallet, newest first, each with
//! the posted balance after it in the ledger's order of application; holds (open pending
//! transfers) apart, with the available balance.
//!
//! One SQL statement reads a page: the wallet's journal lines (found through the wallet
//! indexes on the journal, [`INDEXES`]), each line's balance after it computed as the posted balance now less
//! every newer line (a window sum), so the balance and the lines come from one snapshot and
//! always add up. The journal only grows at its newest end, so a cursor (a line's timestamp
//! and leg) pages back through it unchanged.

use citypay_directory::{AccountKind, DirectoryError, Resident, blob_at, entity_of, int_at};
use citypay_ledger::Timestamp;
use citypay_store::{Value, u64_from_column, u64_to_column};

use crate::{Wallet, WalletError};

/// `column` names a wallet (an account of kind 1: ids from 2^56 to 2^57), as a literal range so
/// that both planners see the partial indexes below apply.
macro_rules! wallets {
    ($column:literal) => {
        concat!($column, " >= 72057594037927936 AND ", $column, " < 144115188075855872")
    };
}

/// The journal's lines of wallets, by the side the
/// wallet is on, in time order. Partial: a shop payment adds one entry (its wallet leg), not
/// one per leg and side (measured: indexes of every account cost the writer about a fifth of
/// its payments). The statement's queries repeat the range so the planner may use them.
pub(crate) const INDEXES: &str = concat!(
    "CREATE INDEX transfers_wallet_debits ON transfers (debit_account, timestamp) WHERE ",
    wallets!("debit_account"),
    "; CREATE INDEX transfers_wallet_credits ON transfers (credit_account, timestamp) WHERE ",
    wallets!("credit_account"),
    ";"
);

/// Lines a page holds at most.
pub const PAGE_MAX: usize = 200;

/// Which lines: a time range, some kinds, after a cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatementQuery {
    /// From this instant on (inclusive).
    pub from: Option<Timestamp>,
    /// Before this instant (exclusive).
    pub until: Option<Timestamp>,
    /// Only these transfer codes ([`citypay_directory::transfer_codes`]); empty: all.
    pub codes: Vec<u16>,
    /// Older than this line (a page's cursor).
    pub before: Option<Cursor>,
    /// At most this many lines (capped at [`PAGE_MAX`]).
    pub limit: usize,
}

/// Where a page ends: its last line's timestamp, transfer and leg (the journal's order; each
/// event of a batch has its own nanosecond, and the transfer breaks ties between batches).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The line's timestamp (nanoseconds).
    pub timestamp: u64,
    /// The line's transfer id.
    pub transfer: [u8; 16],
    /// The line's leg in its transfer.
    pub leg: u16,
}

impl Cursor {
    /// The cursor as the API hands it out: `<timestamp>.<transfer hex>.<leg>`.
    pub fn encode(&self) -> String {
        format!("{}.{}.{}", self.timestamp, citypay_directory::hex::encode(&self.transfer), self.leg)
    }

    /// Parses [`Cursor::encode`]'s form.
    pub fn parse(text: &str) -> Option<Cursor> {
        let mut parts = text.split('.');
        let cursor = Cursor { timestamp: parts.next()?.parse().ok()?, transfer: citypay_directory::hex::decode(parts.next()?)?, leg: parts.next()?.parse().ok()? };
        parts.next().is_none().then_some(cursor)
    }

    /// Before every line.
    fn newest() -> Cursor {
        Cursor { timestamp: i64::MAX.unsigned_abs(), transfer: [0xff; 16], leg: u16::MAX }
    }
}

/// One movement of the wallet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementLine {
    /// When the ledger applied it.
    pub at: Timestamp,
    /// Its transfer code (`transfer_codes::name` names it).
    pub code: u16,
    /// Fen into the wallet (negative: out of it).
    pub amount: i64,
    /// The posted balance right after it.
    pub balance_after: i64,
    /// The other side: a merchant's or biller's name, or what the account is.
    pub counterparty: String,
    /// The ledger transfer (hex) and leg: a reference for support.
    pub reference: String,
    /// The cursor of this line.
    pub cursor: Cursor,
}

/// Money held on the wallet: an open pending transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// When it was placed.
    pub at: Timestamp,
    /// Its transfer code.
    pub code: u16,
    /// Fen held.
    pub amount: i64,
    /// When it is voided unless posted first, if it has a deadline.
    pub until: Option<Timestamp>,
}

/// A page of the statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// The posted balance now.
    pub balance: i64,
    /// What can be spent now: the posted balance less the holds.
    pub available: i64,
    /// Open holds, newest first.
    pub holds: Vec<Hold>,
    /// The page's lines, newest first.
    pub lines: Vec<StatementLine>,
    /// Where the next (older) page starts, if there are older lines.
    pub next: Option<Cursor>,
}

/// The page's lines with their balance after: a window sum over the wallet's posted lines
/// (both wallet indexes), filtered after it is computed (cast back to
/// BIGINT: PostgreSQL sums BIGINTs as NUMERIC). `?7` is empty
/// (every code) or a comma-separated list of codes.
const LINES: &str = concat!("SELECT id, leg, code, debit_account, credit_account, amount, timestamp, balance_after FROM (
    SELECT id, leg, code, debit_account, credit_account, amount, timestamp,
        CAST((SELECT credits_posted - debits_posted FROM accounts WHERE id = ?1)
        - COALESCE(SUM(CASE WHEN credit_account = ?1 THEN amount ELSE -amount END)
            OVER (ORDER BY timestamp DESC, id DESC, leg DESC ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS BIGINT) AS balance_after
    FROM (
        SELECT id, leg, code, debit_account, credit_account, amount, timestamp FROM transfers
            WHERE debit_account = ?1 AND ", wallets!("debit_account"), " AND kind IN (0, 2)
        UNION ALL
        SELECT id, leg, code, debit_account, credit_account, amount, timestamp FROM transfers
            WHERE credit_account = ?1 AND ", wallets!("credit_account"), " AND kind IN (0, 2)
    ) wallet_lines
) numbered
WHERE (timestamp < ?2 OR (timestamp = ?2 AND (id < ?3 OR (id = ?3 AND leg < ?4)))) AND timestamp >= ?5
    AND (?7 = '' OR ',' || ?7 || ',' LIKE '%,' || CAST(code AS TEXT) || ',%')
ORDER BY timestamp DESC, id DESC, leg DESC
LIMIT ?6");

/// The wallet's open holds, newest first.
const HOLDS: &str = concat!(
    "SELECT code, amount, timestamp, deadline FROM transfers WHERE debit_account = ?1 AND ",
    wallets!("debit_account"),
    " AND kind = 1 AND state = 1 ORDER BY timestamp DESC"
);

impl Wallet {
    /// A page of `resident`'s statement.
    pub async fn statement(&self, resident: &Resident, query: &StatementQuery) -> Result<Statement, WalletError> {
        statement_in(&self.directory, resident, query).await
    }
}

/// A page of `resident`'s statement from the ledger of `directory`'s shard: on a country, the
/// shard their city lives on, or one it lived on before a move (its lines of that time).
pub async fn statement_in(directory: &citypay_directory::Directory, resident: &Resident, query: &StatementQuery) -> Result<Statement, WalletError> {
    Reader { directory }.statement(resident, query).await
}

struct Reader<'a> {
    directory: &'a citypay_directory::Directory,
}

impl Reader<'_> {
    async fn statement(&self, resident: &Resident, query: &StatementQuery) -> Result<Statement, WalletError> {
        let wallet = Value::Int(u64_to_column(resident.wallet));
        let limit = query.limit.clamp(1, PAGE_MAX);
        // Before the cursor and before `until`, whichever comes first.
        let until = query.until.map(|t| Cursor { timestamp: t.0, transfer: [0; 16], leg: 0 });
        let before = match (query.before.clone(), until) {
            (Some(cursor), Some(until)) => if (cursor.timestamp, cursor.transfer, cursor.leg) < (until.timestamp, until.transfer, until.leg) { cursor } else { until },
            (Some(cursor), None) => cursor,
            (None, Some(until)) => until,
            (None, None) => Cursor::newest(),
        };
        let codes = query.codes.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        let params = vec![
            wallet.clone(),
            Value::Int(i64::try_from(before.timestamp).unwrap_or(i64::MAX)),
            Value::Blob(before.transfer.to_vec()),
            Value::Int(i64::from(before.leg)),
            Value::Int(query.from.map_or(0, |t| i64::try_from(t.0).unwrap_or(i64::MAX))),
            // One more than asked: whether an older page exists.
            Value::Int(i64::try_from(limit + 1).unwrap_or(i64::MAX)),
            Value::Text(codes),
        ];
        let rows = self.directory.read(LINES, params).await?;
        let balances = self
            .directory
            .read(
                "SELECT credits_posted - debits_posted, credits_posted - debits_posted - debits_pending FROM accounts WHERE id = ?1",
                vec![wallet.clone()],
            )
            .await?;
        let holds = self.directory.read(HOLDS, vec![wallet]).await?;
        let bad = |what: &str| WalletError::Directory(DirectoryError::Storage(format!("statement: {what}")));
        let (balance, available) = match balances.first() {
            Some(row) => (int_at(row, 0)?, int_at(row, 1)?),
            None => (0, 0),
        };
        let time = |row: &[Value], i| u64::try_from(int_at(row, i)?).map(Timestamp).map_err(|_| bad("a time"));
        let code = |row: &[Value], i| u16::try_from(int_at(row, i)?).map_err(|_| bad("a code"));
        let mut lines = Vec::with_capacity(rows.len().min(limit));
        for row in rows.iter().take(limit) {
            let (debit, credit, amount) = (u64_from_column(int_at(row, 3)?), u64_from_column(int_at(row, 4)?), int_at(row, 5)?);
            let (signed, other) = if credit == resident.wallet { (amount, debit) } else { (-amount, credit) };
            let transfer: [u8; 16] = blob_at(row, 0)?.as_slice().try_into().map_err(|_| bad("transfer id"))?;
            let leg = code(row, 1)?;
            let at = time(row, 6)?;
            lines.push(StatementLine {
                at,
                code: code(row, 2)?,
                amount: signed,
                balance_after: int_at(row, 7)?,
                counterparty: self.counterparty(other).await,
                reference: format!("{}:{leg}", citypay_directory::hex::encode(&transfer)),
                cursor: Cursor { timestamp: at.0, transfer, leg },
            });
        }
        let next = if rows.len() > limit { lines.last().map(|l| l.cursor.clone()) } else { None };
        let holds = holds
            .iter()
            .map(|row| {
                Ok(Hold {
                    at: time(row, 2)?,
                    code: code(row, 0)?,
                    amount: int_at(row, 1)?,
                    until: if matches!(row.get(3), Some(Value::Int(_))) { Some(time(row, 3)?) } else { None },
                })
            })
            .collect::<Result<_, WalletError>>()?;
        Ok(Statement { balance, available, holds, lines, next })
    }

    /// What the other side of a line is: a merchant's (or biller's) name, else its kind.
    async fn counterparty(&self, account: u64) -> String {
        let kind = account >> 56;
        if kind == AccountKind::Merchant as u64 {
            if let Ok(merchant) = self.directory.merchant(entity_of(account)).await {
                return merchant.name;
            }
            return "merchant".into();
        }
        match kind {
            k if k == AccountKind::Custody as u64 => "bank card".into(),
            k if k == AccountKind::Wallet as u64 => match self.directory.resident_name(entity_of(account)).await {
                Ok(name) => crate::mask_name(name.expose()),
                Err(_) => "another wallet".into(),
            },
            k if k == AccountKind::InsuranceFund as u64 => "medical insurance fund".into(),
            k if k == AccountKind::FeeRevenue as u64 => "platform fee".into(),
            // Money to or from a wallet or a shop whose city lives on another shard.
            k if k == AccountKind::Clearing as u64 => "another city".into(),
            _ => "other".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use citypay_directory::{AccountKind, account_id};

    #[test]
    fn the_indexed_range_is_every_wallet() {
        let (first, past_last) = (account_id(AccountKind::Wallet, 0), account_id(AccountKind::Wallet, (1 << 56) - 1) + 1);
        assert!(super::INDEXES.contains(&format!(">= {first} AND")) && super::INDEXES.contains(&format!("< {past_last};")), "{first} {past_last}");
    }
}
