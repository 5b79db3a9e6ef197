//! Every bound the ledger relies on, checked against each other at compile time.

/// Most events one call to [`crate::Ledger::apply`] accepts.
pub const BATCH_EVENTS_MAX: usize = 8_190;
/// Most legs in one entry.
pub const ENTRY_LEGS_MAX: usize = 64;
/// Most pending transfers expired at the start of one batch; the rest wait for the next one
/// (a post or void that meets an overdue pending expires it on the spot).
pub const EXPIRIES_PER_BATCH_MAX: usize = 8_192;
/// Default number of recent event ids kept in memory; older ones are looked up in storage.
pub const RECENT_IDS_DEFAULT: usize = 1 << 20;

const _: () = assert!(BATCH_EVENTS_MAX * ENTRY_LEGS_MAX <= u32::MAX as usize);
const _: () = assert!(RECENT_IDS_DEFAULT >= 2 * BATCH_EVENTS_MAX);
const _: () = assert!(ENTRY_LEGS_MAX <= u16::MAX as usize);
