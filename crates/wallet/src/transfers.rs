//! Sending money to someone: a resident sends from their wallet to another real-name
//! resident's, found by mobile number, with a note. Before sending, the sender sees the
//! recipient's name masked (`*磊`) to confirm it is the right person; finding a recipient is
//! limited per sender ([`LOOKUPS_PER_HOUR`]), so nobody can walk the mobile numbers to learn
//! who is registered; a send that moves nothing (no such resident, one's own number, refused)
//! counts as a lookup too, since its answer tells as much. The money moves as one ledger
//! transfer wallet → wallet (code `TRANSFER`, a balance payment, so the sender's class caps
//! count it) under the freeze, with its id derived from the sender's idempotency key: a
//! retry sends it once. Both residents see it in their lists and
//! their statements.
//!
//! [`Wallet::send`] moves money between two wallets of this database's shard. Between shards
//! (`citypay-country`) the money crosses through `citypay-clearing`, and the transfer is
//! recorded on both shards with the rows this module makes ([`transfer_row`]), each naming the
//! other resident by their masked name, since that name lives on the other shard.

use citypay_directory::{BALANCE_PAYMENT, DirectoryError, Resident, derived_event_id, transfer_codes};
use citypay_ledger::{Entry, Event, Leg, Status};
use citypay_shard::{Command, Guard, SubmitError};
use citypay_store::{OnConflict, ServiceRow, Value};

use crate::{Wallet, WalletError, cny_leg};
use citypay_directory::int_at;

/// Recipients a sender may look up in an hour (found or not).
pub const LOOKUPS_PER_HOUR: i64 = 20;
/// The longest note, in characters.
pub const NOTE_MAX_CHARS: usize = 50;
/// Most transfers listed at once.
pub const TRANSFERS_LISTED_MAX: u32 = 100;

/// Whom a mobile number reaches, as the sender may see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The recipient's resident id (never shown to the sender).
    pub resident: u64,
    /// Their name with all but its last character hidden.
    pub masked_name: String,
    /// Their home city.
    pub city: u32,
}

/// Which way a transfer went, for the resident looking at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The resident sent it.
    Sent,
    /// The resident received it.
    Received,
}

/// Where a transfer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferStatus {
    /// The money arrived.
    Completed,
    /// Sent to another shard, its answer not yet known (held from the sender's balance).
    Pending,
    /// The other shard refused it: the money is back with the sender.
    Returned,
}

/// A transfer as one of its two residents sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferLine {
    /// The transfer's id (hex).
    pub id: String,
    /// Sent or received.
    pub direction: Direction,
    /// The other resident's masked name.
    pub counterparty: String,
    /// In fen.
    pub amount: i64,
    /// The sender's note.
    pub note: String,
    /// Unix nanoseconds.
    pub created_ns: u64,
    /// Where it stands (set by the country for transfers to other shards).
    pub status: TransferStatus,
    /// Whether the other resident lives on another shard.
    pub crosses_shards: bool,
}

/// The id of the transfer `sender` sends under `idempotency_key`.
pub fn transfer_id(sender: u64, idempotency_key: &str) -> u128 {
    derived_event_id(&["p2p", &sender.to_string(), idempotency_key])
}

/// The record of a transfer, on one shard. `names`: the sender's and the recipient's masked
/// names, for a transfer between shards.
#[allow(clippy::too_many_arguments)]
pub fn transfer_row(id: u128, sender: u64, recipient: u64, amount: i64, note: &str, created_ns: u64, names: Option<(&str, &str)>) -> ServiceRow {
    let text = |name: Option<&str>| name.map_or(Value::Null, |n| Value::Text(n.to_owned()));
    ServiceRow {
        table: "p2p_transfers",
        key: transfer_key(id),
        columns: vec![
            ("sender", Value::Int(i64::try_from(sender).unwrap_or(-1))),
            ("recipient", Value::Int(i64::try_from(recipient).unwrap_or(-1))),
            ("amount", Value::Int(amount)),
            ("note", Value::Text(note.to_owned())),
            ("created_ns", Value::Int(i64::try_from(created_ns).unwrap_or(i64::MAX))),
            ("sender_name", text(names.map(|n| n.0))),
            ("recipient_name", text(names.map(|n| n.1))),
        ],
        on_conflict: OnConflict::Fail,
    }
}

/// The key of a transfer's record.
pub fn transfer_key(id: u128) -> Vec<(&'static str, Value)> {
    vec![("id", Value::Text(format!("{id:032x}")))]
}

/// Checks a transfer before it moves anything: an amount above zero, a note within bounds
/// (trimmed).
pub fn check_transfer(amount: i64, note: &str) -> Result<String, WalletError> {
    if amount <= 0 {
        return Err(WalletError::InvalidAmount("more than zero".into()));
    }
    check_note(note)
}

/// The wallet's table of transfers between residents.
/// `created_ns` is the writer's clock in nanoseconds: two transfers of one resident in one
/// second still list in the order they were made.
pub(crate) const TRANSFERS_TABLE: &str = "CREATE TABLE p2p_transfers (id TEXT PRIMARY KEY, sender BIGINT NOT NULL,
        recipient BIGINT NOT NULL, amount BIGINT NOT NULL, note TEXT NOT NULL, created_ns BIGINT NOT NULL);
    CREATE INDEX p2p_transfers_sent ON p2p_transfers (sender, created_ns, id);
    CREATE INDEX p2p_transfers_received ON p2p_transfers (recipient, created_ns, id);
    CREATE TABLE recipient_lookups (sender BIGINT NOT NULL, hour BIGINT NOT NULL, lookups BIGINT NOT NULL,
        PRIMARY KEY (sender, hour));";

/// A name with all but its last character hidden: 李磊 → `*磊`, 张建军 → `**军`.
pub fn mask_name(name: &str) -> String {
    let letters: Vec<char> = name.chars().filter(|c| !c.is_whitespace()).collect();
    match letters.split_last() {
        Some((last, rest)) => "*".repeat(rest.len().max(1)) + &last.to_string(),
        None => "*".into(),
    }
}

fn check_note(note: &str) -> Result<String, WalletError> {
    let note = note.trim();
    if note.chars().count() > NOTE_MAX_CHARS || note.chars().any(char::is_control) {
        return Err(WalletError::InvalidNote(format!("at most {NOTE_MAX_CHARS} characters, none of them control characters")));
    }
    Ok(note.to_owned())
}

impl Wallet {
    /// `resident`'s name, masked, as another resident may see it.
    pub async fn masked_name(&self, resident: u64) -> Result<String, WalletError> {
        Ok(mask_name(self.directory.resident_name(resident).await?.expose()))
    }

    /// Counts one lookup of `sender`'s in this hour; past [`LOOKUPS_PER_HOUR`], refuses.
    pub async fn count_lookup(&self, sender: u64) -> Result<(), WalletError> {
        let now = self.directory.clock().now().unix_seconds();
        let hour = now / 3600;
        let key = vec![("sender", Value::Int(i64::try_from(sender).unwrap_or(-1))), ("hour", Value::Int(i64::try_from(hour).unwrap_or(0)))];
        for _ in 0..5 {
            let rows = self
                .directory
                .read("SELECT lookups FROM recipient_lookups WHERE sender = ?1 AND hour = ?2", key.iter().map(|(_, v)| v.clone()).collect())
                .await?;
            let counted = rows.first().map(|row| int_at(row, 0)).transpose()?;
            if counted.unwrap_or(0) >= LOOKUPS_PER_HOUR {
                return Err(WalletError::TooManyLookups { retry_after_s: 3600 - now % 3600 });
            }
            let guard = match counted {
                None => Guard::Absent { table: "recipient_lookups", key: key.clone() },
                Some(n) => Guard::Matches { table: "recipient_lookups", key: key.clone(), expect: vec![("lookups", Value::Int(n))] },
            };
            let row = ServiceRow { table: "recipient_lookups", key: key.clone(), columns: vec![("lookups", Value::Int(counted.unwrap_or(0) + 1))], on_conflict: OnConflict::Update };
            match self.directory.shard().submit(Command { event: None, guards: vec![guard], rows: vec![row], always_rows: Vec::new() }).await {
                Ok(_) => return Ok(()),
                Err(SubmitError::GuardFailed { .. }) => continue,
                Err(other) => return Err(WalletError::Unavailable(other.to_string())),
            }
        }
        Err(WalletError::Unavailable("too many lookups at once; retry".into()))
    }

    /// The resident `mobile` reaches, counted against `sender`'s lookups; never the sender.
    pub async fn find_recipient(&self, sender: &Resident, mobile: &str) -> Result<Recipient, WalletError> {
        self.count_lookup(sender.id).await?;
        let found = self.directory.resident_by_mobile(mobile).await?.ok_or(WalletError::RecipientNotFound)?;
        if found.id == sender.id {
            return Err(WalletError::OwnWallet);
        }
        Ok(Recipient { resident: found.id, masked_name: self.masked_name(found.id).await?, city: found.city })
    }

    /// Sends `amount` fen from `sender`'s wallet to the resident `mobile` reaches, with `note`.
    /// The transfer's id derives from `idempotency_key`: the same key sends once, and answers
    /// the first transfer again.
    pub async fn send(&self, sender: &Resident, mobile: &str, amount: i64, note: &str, idempotency_key: &str) -> Result<TransferLine, WalletError> {
        let note = check_transfer(amount, note)?;
        let id = transfer_id(sender.id, idempotency_key);
        let id_text = format!("{id:032x}");
        if let Some(done) = self.transfer(sender, &id_text).await? {
            return Ok(done);
        }
        let recipient = match self.directory.resident_by_mobile(mobile).await? {
            Some(found) if found.id != sender.id => found,
            found => {
                self.count_lookup(sender.id).await?;
                return Err(if found.is_some() { WalletError::OwnWallet } else { WalletError::RecipientNotFound });
            }
        };
        self.send_found(sender, &recipient, amount, note, id).await
    }

    /// [`Wallet::send`]'s write, once the transfer's id (`id`, not sent before), the note
    /// (checked) and the recipient (of this shard, not the sender) are known: the country's
    /// send looks the recipient up itself, and does not read anything twice.
    pub async fn send_found(&self, sender: &Resident, recipient: &Resident, amount: i64, note: String, id: u128) -> Result<TransferLine, WalletError> {
        let id_text = format!("{id:032x}");
        let now = self.directory.clock().now().0;
        let key = transfer_key(id);
        let row = transfer_row(id, sender.id, recipient.id, amount, &note, now, None);
        let leg = Leg { class: BALANCE_PAYMENT, ..cny_leg(sender.wallet, recipient.wallet, amount, transfer_codes::TRANSFER, 0) };
        let command = Command {
            event: Some(Event::Entry(Entry { id, legs: vec![leg] })),
            guards: vec![Guard::Absent { table: "p2p_transfers", key }, citypay_directory::Directory::wallet_not_frozen(sender.id)],
            rows: vec![row],
            always_rows: Vec::new(),
        };
        match self.directory.shard().submit(command).await {
            Ok(outcome) if outcome.status == Status::Ok => {
                tracing::debug!(sender = sender.id, recipient = recipient.id, amount, "sent");
                let counterparty = self.masked_name(recipient.id).await?;
                Ok(TransferLine { id: id_text, direction: Direction::Sent, counterparty, amount, note, created_ns: now, status: TransferStatus::Completed, crosses_shards: false })
            }
            Ok(outcome) => {
                self.count_lookup(sender.id).await?;
                Err(WalletError::Refused(outcome.status))
            }
            // Sent meanwhile by a retry of the same key: its record answers.
            Err(SubmitError::GuardFailed { guard: 0 }) => self.transfer(sender, &id_text).await?.ok_or_else(|| WalletError::Unavailable("retry".into())),
            Err(SubmitError::GuardFailed { .. }) => {
                self.count_lookup(sender.id).await?;
                Err(DirectoryError::WalletFrozen.into())
            }
            Err(other) => Err(WalletError::Unavailable(other.to_string())),
        }
    }

    /// A line from a row of `p2p_transfers` (id, sender, recipient, amount, note, created_ns,
    /// sender_name, recipient_name), with the other resident's id.
    fn line(&self, resident: u64, row: &[Value]) -> Result<(TransferLine, u64), WalletError> {
        let bad = |what: &str| WalletError::Unavailable(format!("transfer row: {what}"));
        let text = |i: usize| match row.get(i) {
            Some(Value::Text(t)) => Ok(t.clone()),
            _ => Err(bad("text")),
        };
        let sender = u64::try_from(int_at(row, 1)?).map_err(|_| bad("sender"))?;
        let recipient = u64::try_from(int_at(row, 2)?).map_err(|_| bad("recipient"))?;
        let (direction, other) = if sender == resident { (Direction::Sent, recipient) } else { (Direction::Received, sender) };
        let line = TransferLine {
            id: text(0)?,
            direction,
            counterparty: String::new(),
            amount: int_at(row, 3)?,
            note: text(4)?,
            created_ns: u64::try_from(int_at(row, 5)?).map_err(|_| bad("created_ns"))?,
            status: TransferStatus::Completed,
            crosses_shards: false,
        };
        // Between shards the record names the other resident.
        let stored = row.get(if direction == Direction::Sent { 7 } else { 6 });
        let mut line = line;
        if let Some(Value::Text(name)) = stored {
            line.counterparty = name.clone();
            line.crosses_shards = true;
        }
        Ok((line, other))
    }

    /// One transfer of `resident`'s (sent or received) by id.
    pub async fn transfer(&self, resident: &Resident, id: &str) -> Result<Option<TransferLine>, WalletError> {
        let rows = self
            .directory
            .read("SELECT id, sender, recipient, amount, note, created_ns, sender_name, recipient_name FROM p2p_transfers WHERE id = ?1", vec![Value::Text(id.to_owned())])
            .await?;
        let Some(row) = rows.first() else { return Ok(None) };
        let (mut line, other) = self.line(resident.id, row)?;
        // A received line names its sender: the row is another's when the resident is not
        // its recipient either.
        let recipient = u64::try_from(int_at(row, 2)?).unwrap_or(0);
        if line.direction == Direction::Received && recipient != resident.id {
            return Ok(None);
        }
        if !line.crosses_shards {
            line.counterparty = self.masked_name(other).await?;
        }
        Ok(Some(line))
    }

    /// `resident`'s transfers, sent and received, newest first, after `before` (the created_ns
    /// and id of the last one of the previous page), at most `limit`.
    pub async fn transfers(&self, resident: &Resident, before: Option<(u64, String)>, limit: u32) -> Result<Vec<TransferLine>, WalletError> {
        let limit = limit.clamp(1, TRANSFERS_LISTED_MAX);
        let (at, id) = before.unwrap_or((u64::MAX >> 1, "~".into()));
        let me = Value::Int(i64::try_from(resident.id).unwrap_or(-1));
        let rows = self
            .directory
            .read(
                "SELECT id, sender, recipient, amount, note, created_ns, sender_name, recipient_name FROM (
                    SELECT id, sender, recipient, amount, note, created_ns, sender_name, recipient_name FROM p2p_transfers WHERE sender = ?1 AND (created_ns < ?2 OR (created_ns = ?2 AND id < ?3))
                    UNION ALL
                    SELECT id, sender, recipient, amount, note, created_ns, sender_name, recipient_name FROM p2p_transfers WHERE recipient = ?1 AND (created_ns < ?2 OR (created_ns = ?2 AND id < ?3))
                 ) AS mine ORDER BY created_ns DESC, id DESC LIMIT ?4",
                vec![me, Value::Int(i64::try_from(at).unwrap_or(i64::MAX)), Value::Text(id), Value::Int(i64::from(limit))],
            )
            .await?;
        let mut lines = Vec::with_capacity(rows.len());
        for row in &rows {
            let (mut line, other) = self.line(resident.id, row)?;
            if !line.crosses_shards {
                line.counterparty = self.masked_name(other).await?;
            }
            lines.push(line);
        }
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::mask_name;

    #[test]
    fn names_are_masked_but_their_last_character() {
        assert_eq!(mask_name("李磊"), "*磊");
        assert_eq!(mask_name("张建军"), "**军");
        assert_eq!(mask_name("磊"), "*磊");
        assert_eq!(mask_name("Li Lei"), "****i");
        assert_eq!(mask_name(""), "*");
    }
}
