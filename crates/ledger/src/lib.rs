//! The citypay ledger: a pure, deterministic double-entry state machine.
//!
//! It is handed a batch of [`Event`]s and the current time and returns an [`Outcome`] per event,
//! plus the [`Effects`] a store must persist. It never reads a clock, touches a disk or allocates
//! per transfer beyond its maps; the shard crate wraps it with durability.

mod account;
mod currency;
mod event;
mod ledger;
pub mod limits;
mod recent;
mod status;
mod time;

pub use account::{Account, AccountFlags, Balance, Cap, Limits, Window, WindowCap, WindowUsage};
pub use currency::{Currency, CurrencyError};
pub use event::{
    AccountId, CarryUsage, Entry, Event, EventId, Leg, NewAccount, PostPending, SetLimits,
    Transfer, VoidPending,
};
pub use ledger::{
    Effects, JournalKind, JournalRow, Ledger, LedgerConfig, OpenPending, PendingState,
    PendingUpdate, Rejection, StoredEvent,
};
pub use status::{Outcome, Status};
pub use time::{LocalDate, Timestamp, civil_from_days, days_from_civil};
