//! Limits on guessing passwords. Every password check (signing in, changing the password,
//! unfreezing the wallet) first reserves one attempt against a counter of the current
//! 3-hour window: the account's, or the known client's when the request carries this
//! account's ticket. A reservation that would pass the maximum is refused (429 with the
//! seconds left in the window); a correct password gives its reservation back, so only
//! failures stay counted. Reserving before checking makes the bound exact: the counters live
//! in the database (`sign_in_failures`) and each reservation is a compare-and-swap checked by
//! the single writer, so however many API servers and concurrent requests there are, a window
//! holds at most the maximum of checked wrong passwords per account.
//!
//! The client address's counter is read before the check and counted after a wrong password
//! (many residents behind one address sign in at once; reserving would count their good
//! sign-ins in flight as failures), so it lets through at most the maximum plus the checks
//! already in flight when it is reached.
//!
//! The owner is never locked out for good: a window ends after 3 hours, and a client that
//! once signed in to the account holds a ticket whose own budget strangers cannot spend, so
//! strangers' failures against the account do not stop the owner's phone.

use citypay_shard::{Command, Guard};
use citypay_store::{OnConflict, ServiceRow, Value};

use crate::{Directory, DirectoryError, Secret, int, uint};

/// The length of a counting window: Alipay refuses sign-in for 3 hours after 5 wrong
/// passwords.
pub const SIGN_IN_WINDOW_S: u64 = 3 * 3600;
/// Wrong passwords per account and window from clients without the account's ticket.
pub const ACCOUNT_FAILURES_MAX: i64 = 5;
/// Wrong passwords per known client (ticket) and window.
pub const CLIENT_FAILURES_MAX: i64 = 5;
/// Wrong passwords per client address and window, whatever the accounts (generous: many
/// residents may share one address behind a carrier's NAT).
pub const ADDRESS_FAILURES_MAX: i64 = 50;
/// How long a known-client ticket is good for.
pub const TICKET_TTL_S: u64 = 90 * 24 * 3600;
/// Compare-and-swap attempts at a reservation before answering "busy".
const RESERVE_TRIES: usize = 8;

/// Where a password check comes from.
#[derive(Clone, Default)]
pub struct SignInFrom {
    /// The client's address, as the API server trusts it (the peer, or a configured proxy's
    /// `X-Forwarded-For`); `None` for in-process callers.
    pub address: Option<std::net::IpAddr>,
    /// The known-client ticket of an earlier successful sign-in, if the client sent one.
    pub ticket: Option<String>,
}

impl std::fmt::Debug for SignInFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInFrom").field("ticket", &self.ticket.is_some()).finish_non_exhaustive()
    }
}

/// One reserved attempt: the counter it was reserved against, the address's, and the client
/// it came from.
struct Attempt {
    counter: Vec<u8>,
    address: Option<Vec<u8>>,
    window: u64,
    account: String,
    client: String,
}

impl Directory {
    /// A counter's subject: a keyed blind index, so neither mobile numbers nor addresses are
    /// stored.
    fn limit_subject(&self, what: &str) -> Vec<u8> {
        crate::residents::index_bytes(&self.keys.index.index("sign_in_limit", what))
    }

    /// Checks `password` against `stored` (`None`: no such account, which fails the same way)
    /// under the limits for `account`; on success gives the reservation back and returns a
    /// fresh ticket for the client.
    pub(crate) async fn password_checked(&self, account: &str, from: &SignInFrom, stored: Option<&str>, password: &str) -> Result<Secret<String>, DirectoryError> {
        let attempt = self.reserve_attempt(account, from).await?;
        if !stored.is_some_and(|hash| self.passwords.verify(password, hash)) {
            if let Some(address) = &attempt.address {
                self.count_address_failure(address, attempt.window).await?;
            }
            // Neither the account (a mobile number, a user name) nor the address is logged.
            tracing::debug!(known_client = from.ticket.is_some(), "wrong password");
            return Err(DirectoryError::WrongCredentials);
        }
        self.give_back(&attempt.counter, attempt.window).await?;
        let expires = self.now().unix_seconds() + TICKET_TTL_S;
        Ok(Secret::new(self.keys.tokens.issue_ticket(&attempt.account, &attempt.client, expires)))
    }

    async fn reserve_attempt(&self, account: &str, from: &SignInFrom) -> Result<Attempt, DirectoryError> {
        let now = self.now().unix_seconds();
        let window = now - now % SIGN_IN_WINDOW_S;
        let account_subject = self.limit_subject(&format!("account:{account}"));
        let account = crate::hex::encode(&account_subject);
        let known = from.ticket.as_deref().and_then(|ticket| self.keys.tokens.verify_ticket(ticket, &account, now));
        let (counter, max) = match &known {
            Some(client) => (self.limit_subject(&format!("client:{client}")), CLIENT_FAILURES_MAX),
            None => (account_subject, ACCOUNT_FAILURES_MAX),
        };
        let limited = DirectoryError::RateLimited { retry_after_s: window + SIGN_IN_WINDOW_S - now };
        let address = from.address.map(|address| self.limit_subject(&format!("address:{address}")));
        // A known client has its own budget; strangers at its address (a carrier's NAT) do not
        // spend it.
        if known.is_none()
            && let Some(address) = &address
            && self.failures(address, window).await?.unwrap_or(0) >= ADDRESS_FAILURES_MAX
        {
            return Err(limited);
        }
        let key = vec![("subject", Value::Blob(counter.clone())), ("window_start", uint(window))];
        for _ in 0..RESERVE_TRIES {
            let failures = self.failures(&counter, window).await?;
            if failures.unwrap_or(0) >= max {
                return Err(limited);
            }
            if self.submit(count_command(&key, failures)).await?.is_ok() {
                let client = known.unwrap_or_else(|| crate::hex::encode(&crate::random_bytes::<12>()));
                return Ok(Attempt { counter, address, window, account, client });
            }
        }
        Err(DirectoryError::Unavailable("too many sign-ins at once for this account; retry".into()))
    }

    /// A wrong password from `address`: counted, retrying a race with another count a few
    /// times (past that the other counts stand).
    async fn count_address_failure(&self, address: &[u8], window: u64) -> Result<(), DirectoryError> {
        let key = vec![("subject", Value::Blob(address.to_vec())), ("window_start", uint(window))];
        for _ in 0..RESERVE_TRIES {
            let failures = self.failures(address, window).await?;
            if self.submit(count_command(&key, failures)).await?.is_ok() {
                return Ok(());
            }
        }
        Ok(())
    }

    async fn failures(&self, subject: &[u8], window: u64) -> Result<Option<i64>, DirectoryError> {
        let rows = self
            .read("SELECT failures FROM sign_in_failures WHERE subject = ?1 AND window_start = ?2", vec![Value::Blob(subject.to_vec()), uint(window)])
            .await?;
        rows.first().map(|row| int(&row[0])).transpose()
    }

    /// A correct password was not a failure: its reservation comes off the count. Losing every
    /// race leaves one failure too many counted, which errs on the safe side.
    async fn give_back(&self, subject: &[u8], window: u64) -> Result<(), DirectoryError> {
        for _ in 0..3 {
            let Some(n) = self.failures(subject, window).await?.filter(|n| *n > 0) else { return Ok(()) };
            let key = vec![("subject", Value::Blob(subject.to_vec())), ("window_start", uint(window))];
            let guard = Guard::Matches { table: "sign_in_failures", key: key.clone(), expect: vec![("failures", Value::Int(n))] };
            let row = ServiceRow { table: "sign_in_failures", key, columns: vec![("failures", Value::Int(n - 1))], on_conflict: OnConflict::UpdateOnly };
            if self.submit(Command { event: None, guards: vec![guard], rows: vec![row], always_rows: Vec::new() }).await?.is_ok() {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// One more failure on the counter `key`, if it still holds `failures` (`None`: no row yet).
fn count_command(key: &[(&'static str, Value)], failures: Option<i64>) -> Command {
    let guard = match failures {
        None => Guard::Absent { table: "sign_in_failures", key: key.to_vec() },
        Some(n) => Guard::Matches { table: "sign_in_failures", key: key.to_vec(), expect: vec![("failures", Value::Int(n))] },
    };
    let row = ServiceRow { table: "sign_in_failures", key: key.to_vec(), columns: vec![("failures", Value::Int(failures.unwrap_or(0) + 1))], on_conflict: OnConflict::Update };
    Command { event: None, guards: vec![guard], rows: vec![row], always_rows: Vec::new() }
}
