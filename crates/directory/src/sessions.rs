//! Sessions: the record behind every bearer token, so that a resident can sign out, end their
//! other sessions (a lost phone), and have them ended by a password change; and the wallet
//! freeze, which the writer enforces on every payment out of the wallet.
//!
//! A token names its session; a session is live until it expires or is ended. Whether it is
//! live is read from the database and kept per server for [`SESSION_CACHE_TTL`], so ending
//! it holds at once on the server that ended it and within that time on every other.

use std::time::{Duration, Instant};

use citypay_shard::{Command, Guard};
use citypay_store::{OnConflict, ServiceRow, Value};
use citypay_vault::Secret;

use crate::sign_in_limits::SignInFrom;
use crate::tokens::Principal;
use crate::{Directory, DirectoryError, blob, int, text, uint};

/// How long a session found live is believed live by a server that did not end it.
pub const SESSION_CACHE_TTL: Duration = Duration::from_secs(5);
/// Most sessions cached; past it, stale entries are dropped.
const SESSION_CACHE_MAX: usize = 100_000;
/// Most live sessions listed, newest first.
const SESSIONS_LISTED_MAX: i64 = 100;
/// Sessions ended per writer command when ending many.
const SESSIONS_ENDED_PER_COMMAND: usize = 500;

/// A successful sign-in: the bearer token, its session, and the ticket that marks this client
/// as known to the account (it keeps its own failure budget, see `sign_in_limits.rs`).
pub struct SignedIn {
    /// `Authorization: Bearer <token>`.
    pub token: Secret<String>,
    /// The session's id (listed by [`Directory::sessions`], ended by [`Directory::end_session`]).
    pub session: String,
    /// The known-client ticket to send with this account's next sign-ins from this client.
    pub ticket: Secret<String>,
}

impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn").field("session", &self.session).finish_non_exhaustive()
    }
}

/// A live session, as its owner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// Session id.
    pub id: String,
    /// When it was opened (Unix seconds).
    pub created_at: u64,
    /// When it expires (Unix seconds).
    pub expires_at: u64,
}

/// The `principal` column of a session.
fn owner(principal: Principal) -> String {
    match principal {
        Principal::Resident { id, .. } => format!("resident:{id}"),
        Principal::Operator { id, .. } => format!("operator:{id}"),
        Principal::Cashier { id, .. } => format!("cashier:{id}"),
    }
}

fn resident_key(id: u64) -> Vec<(&'static str, Value)> {
    vec![("id", uint(id))]
}

impl Directory {
    /// Opens a session for `principal` and signs its token.
    pub(crate) async fn open_session(&self, principal: Principal, ttl_s: u64) -> Result<(String, Secret<String>), DirectoryError> {
        let now = self.now();
        let owner = owner(principal);
        for attempt in 0..3 {
            let id = crate::hex::encode(&self.draw::<16>(&["session", &owner, &now.0.to_string(), &attempt.to_string()]));
            let expires_at = now.unix_seconds() + ttl_s;
            let row = ServiceRow {
                table: "sessions",
                key: vec![("id", Value::Text(id.clone()))],
                columns: vec![
                    ("principal", Value::Text(owner.clone())),
                    ("created_at", uint(now.unix_seconds())),
                    ("expires_at", uint(expires_at)),
                    ("ended_at", Value::Null),
                ],
                on_conflict: OnConflict::Fail,
            };
            let guards = vec![Guard::Absent { table: "sessions", key: row.key.clone() }];
            if self.submit(Command { event: None, guards, rows: vec![row], always_rows: Vec::new() }).await?.is_ok() {
                let token = self.keys.tokens.issue(principal, &id, expires_at);
                return Ok((id, Secret::new(token)));
            }
        }
        Err(DirectoryError::Unavailable("could not draw a free session id".into()))
    }

    /// Who a token speaks for, by its signature and expiry alone (no session read): where a
    /// country's server sends the request. Never enough to act on: [`Directory::authenticate_token`]
    /// checks the session.
    pub fn token_principal(&self, token: &str) -> Option<Principal> {
        self.keys.tokens.verify(token, self.now().unix_seconds()).map(|(principal, _)| principal)
    }

    /// Who a bearer token speaks for, and its session: the token is genuine and current, and
    /// its session has not been ended (as this server last read it, at most
    /// [`SESSION_CACHE_TTL`] ago; a session ended here is known at once).
    pub async fn authenticate_token(&self, token: &str) -> Result<Option<(Principal, String)>, DirectoryError> {
        let Some((principal, session)) = self.keys.tokens.verify(token, self.now().unix_seconds()) else { return Ok(None) };
        let cached = self.sessions.read().ok().and_then(|cache| cache.get(&session).filter(|(_, at)| at.elapsed() < SESSION_CACHE_TTL).map(|(live, _)| *live));
        let live = match cached {
            Some(live) => live,
            None => {
                let rows = self.read("SELECT principal, ended_at FROM sessions WHERE id = ?1", vec![Value::Text(session.clone())]).await?;
                let live = rows.first().is_some_and(|row| matches!(&row[..], [Value::Text(p), Value::Null] if *p == owner(principal)));
                if let Ok(mut cache) = self.sessions.write() {
                    if cache.len() >= SESSION_CACHE_MAX {
                        cache.retain(|_, (_, at)| at.elapsed() < SESSION_CACHE_TTL);
                        // All still fresh: start over rather than scan a full map on every miss.
                        if cache.len() >= SESSION_CACHE_MAX {
                            cache.clear();
                        }
                    }
                    cache.insert(session.clone(), (live, Instant::now()));
                }
                live
            }
        };
        Ok(live.then_some((principal, session)))
    }

    /// The live sessions of `principal`, newest first (at most 100).
    pub async fn sessions(&self, principal: Principal) -> Result<Vec<SessionInfo>, DirectoryError> {
        let rows = self
            .read(
                "SELECT id, created_at, expires_at FROM sessions WHERE principal = ?1 AND expires_at > ?2 AND ended_at IS NULL
                 ORDER BY created_at DESC, id LIMIT ?3",
                vec![Value::Text(owner(principal)), uint(self.now().unix_seconds()), Value::Int(SESSIONS_LISTED_MAX)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(SessionInfo {
                    id: text(&row[0])?,
                    created_at: u64::try_from(int(&row[1])?).unwrap_or(0),
                    expires_at: u64::try_from(int(&row[2])?).unwrap_or(0),
                })
            })
            .collect()
    }

    /// Ends one session of `principal` (signing out, when it is the caller's own). Ending an
    /// ended session again is fine; another principal's session is not found.
    pub async fn end_session(&self, principal: Principal, session: &str) -> Result<(), DirectoryError> {
        let key = vec![("id", Value::Text(session.to_owned()))];
        let command = Command {
            event: None,
            guards: vec![Guard::Matches { table: "sessions", key: key.clone(), expect: vec![("principal", Value::Text(owner(principal)))] }],
            rows: self.ending_rows(&[session.to_owned()]),
            always_rows: Vec::new(),
        };
        let ended = self.submit(command).await?.map_err(|_| DirectoryError::NotFound);
        self.forget_sessions(&[session.to_owned()]);
        ended.map(|_| ())
    }

    /// Ends every live session of `principal` but `keep`; returns how many were ended.
    pub async fn end_other_sessions(&self, principal: Principal, keep: &str) -> Result<usize, DirectoryError> {
        let mut ended = 0;
        loop {
            let others = self.other_sessions(principal, keep).await?;
            if others.is_empty() {
                return Ok(ended);
            }
            for chunk in others.chunks(SESSIONS_ENDED_PER_COMMAND) {
                self.submit(Command { event: None, guards: Vec::new(), rows: self.ending_rows(chunk), always_rows: Vec::new() }).await?.ok();
                self.forget_sessions(chunk);
                ended += chunk.len();
            }
        }
    }

    async fn other_sessions(&self, principal: Principal, keep: &str) -> Result<Vec<String>, DirectoryError> {
        let rows = self
            .read(
                "SELECT id FROM sessions WHERE principal = ?1 AND expires_at > ?2 AND ended_at IS NULL AND id <> ?3 LIMIT 5000",
                vec![Value::Text(owner(principal)), uint(self.now().unix_seconds()), Value::Text(keep.to_owned())],
            )
            .await?;
        rows.iter().map(|row| text(&row[0])).collect()
    }

    fn ending_rows(&self, sessions: &[String]) -> Vec<ServiceRow> {
        let now = uint(self.now().unix_seconds());
        sessions
            .iter()
            .map(|id| ServiceRow {
                table: "sessions",
                key: vec![("id", Value::Text(id.clone()))],
                columns: vec![("ended_at", now.clone())],
                on_conflict: OnConflict::UpdateOnly,
            })
            .collect()
    }

    /// This server knows at once that these sessions are over.
    fn forget_sessions(&self, sessions: &[String]) {
        if let Ok(mut cache) = self.sessions.write() {
            for id in sessions {
                cache.insert(id.clone(), (false, Instant::now()));
            }
        }
    }

    /// The resident's mobile number, unsealed: the account that sign-in limits count against.
    async fn resident_account(&self, resident: u64) -> Result<(String, String), DirectoryError> {
        let rows = self.read("SELECT mobile_sealed, password_hash FROM residents WHERE id = ?1", vec![uint(resident)]).await?;
        let row = rows.first().ok_or(DirectoryError::NotFound)?;
        let mobile = self.unseal(&blob(&row[0])?, &format!("resident:{resident}:mobile"))?;
        let mobile = String::from_utf8(mobile.expose().clone()).map_err(|_| DirectoryError::Storage("mobile".into()))?;
        Ok((crate::residents::account_subject(&mobile), text(&row[1])?))
    }

    /// Checks a signed-in resident's password under the same failure limits as signing in (so
    /// a stolen token cannot be used to guess it).
    async fn resident_password_checked(&self, resident: u64, password: &str, from: &SignInFrom) -> Result<(), DirectoryError> {
        let (account, hash) = self.resident_account(resident).await?;
        self.password_checked(&account, from, Some(&hash), password).await.map(|_| ())
    }

    /// Changes a resident's password: the current one is checked (under the sign-in limits),
    /// and every other session ends, in the same command as the new hash. Returns how many
    /// sessions were ended.
    pub async fn change_password(&self, resident: u64, session: &str, current: &str, new: &str, from: &SignInFrom) -> Result<usize, DirectoryError> {
        // The current password first: a guess with a stolen token costs no hash of a new one.
        self.resident_password_checked(resident, current, from).await?;
        let hash = self.passwords.hash(new)?;
        let principal = Principal::Resident { id: resident, city: 0 };
        let others = self.other_sessions(principal, session).await?;
        let mut rows = vec![ServiceRow {
            table: "residents",
            key: resident_key(resident),
            columns: vec![("password_hash", Value::Text(hash))],
            on_conflict: OnConflict::UpdateOnly,
        }];
        let first: Vec<String> = others.iter().take(SESSIONS_ENDED_PER_COMMAND).cloned().collect();
        rows.extend(self.ending_rows(&first));
        self.submit(Command { event: None, guards: Vec::new(), rows, always_rows: Vec::new() }).await?.map_err(|_| DirectoryError::NotFound)?;
        self.forget_sessions(&first);
        tracing::debug!(resident, "password changed");
        // Sessions past the first command's share (or opened meanwhile) end too.
        Ok(first.len() + self.end_other_sessions(principal, session).await?)
    }

    /// Freezes the resident's wallet: from the next batch the writer refuses every payment out
    /// of it (see [`Directory::wallet_not_frozen`]); refunds and top-ups still come in.
    pub async fn freeze_wallet(&self, resident: u64) -> Result<(), DirectoryError> {
        self.set_frozen(resident, true).await
    }

    /// Unfreezes the wallet. It needs the resident's password (checked under the sign-in
    /// limits): whoever holds a lost phone's session must not undo the owner's freeze.
    pub async fn unfreeze_wallet(&self, resident: u64, password: &str, from: &SignInFrom) -> Result<(), DirectoryError> {
        self.resident_password_checked(resident, password, from).await?;
        self.set_frozen(resident, false).await
    }

    async fn set_frozen(&self, resident: u64, frozen: bool) -> Result<(), DirectoryError> {
        let row = ServiceRow {
            table: "residents",
            key: resident_key(resident),
            columns: vec![("wallet_frozen", Value::Int(i64::from(frozen)))],
            on_conflict: OnConflict::UpdateOnly,
        };
        self.submit(Command { event: None, guards: Vec::new(), rows: vec![row], always_rows: Vec::new() }).await?.map_err(|_| DirectoryError::NotFound)?;
        tracing::debug!(resident, frozen, "wallet freeze changed");
        Ok(())
    }

    /// Whether the resident's wallet is frozen now.
    pub async fn wallet_frozen(&self, resident: u64) -> Result<bool, DirectoryError> {
        let rows = self.read("SELECT wallet_frozen FROM residents WHERE id = ?1", vec![uint(resident)]).await?;
        Ok(int(&rows.first().ok_or(DirectoryError::NotFound)?[0])? != 0)
    }

    /// The guard that every command paying out of a resident's wallet carries: the writer
    /// checks it in the payment's own batch, so a freeze holds on every server at once. A
    /// command that fails it answers [`DirectoryError::WalletFrozen`].
    pub fn wallet_not_frozen(resident: u64) -> Guard {
        Guard::Matches { table: "residents", key: resident_key(resident), expect: vec![("wallet_frozen", Value::Int(0))] }
    }
}
