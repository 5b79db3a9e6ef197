//! Each simulated action's own time. The services read the time from their clock; in a
//! simulation that clock answers the time of the action whose task is asking, so people act
//! concurrently (and the writer batches them as it likes) while every trade, code and limit
//! sees the time the plan gave its action.

use std::future::Future;

use citypay_ledger::Timestamp;
use citypay_shard::{Clock, ManualClock};

tokio::task_local! {
    static ACTION_TIME: u64;
}

/// Runs `action` at `unix_seconds`, as far as [`ActionClock`] is concerned.
pub(crate) async fn at<F: Future>(unix_seconds: u64, action: F) -> F::Output {
    ACTION_TIME.scope(unix_seconds, action).await
}

/// The services' clock in a simulation: the current action's time, else the day's clock.
#[derive(Clone, Debug)]
pub struct ActionClock {
    day: ManualClock,
}

impl ActionClock {
    /// A clock that falls back to `day` outside simulated actions.
    pub fn new(day: ManualClock) -> ActionClock {
        ActionClock { day }
    }
}

impl Clock for ActionClock {
    fn now(&self) -> Timestamp {
        ACTION_TIME.try_with(|t| Timestamp::from_unix_seconds(*t)).unwrap_or_else(|_| self.day.now())
    }
}
