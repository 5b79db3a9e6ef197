//! Fees: a rate per merchant category, in basis points of the amount paid. The fee is a leg of
//! the payment's own ledger entry (the merchant is credited the amount, then debited the fee to
//! the platform's fee revenue), so it commits with the payment or not at all.
//!
//! Rounding, in fen: a payment's fee is rounded half up. A refund gives back the fee in
//! proportion to what has been refunded in total, rounded down: after refunds of `r` out of
//! `amount`, the merchant has been given back `floor(fee * r / amount)`. So partial refunds
//! never give back more than the fee, and a full refund gives back exactly all of it.
//!
//! A refund crossing shards can be returned after others were made. What the trade gave back
//! (or holds to give back) is kept on it, and a refund gives back only what is still owed:
//! the fee is never given twice. When a refund others counted on is returned, the fee they
//! gave stays given (more than the rounded-down share of what stands, never more than the
//! fee), and the refunds that replace it give none of it again.

use citypay_shard::Command;
use citypay_store::{OnConflict, ServiceRow, Value};

use crate::{Category, Directory, DirectoryError};

/// The highest rate a schedule accepts: 10% (in basis points).
pub const RATE_MAX_BP: u32 = 1_000;

/// The fee on a payment of `amount` fen at `rate_bp` basis points, rounded half up.
pub fn fee_for(amount: i64, rate_bp: u32) -> i64 {
    let exact = i128::from(amount.max(0)) * i128::from(rate_bp);
    i64::try_from((exact + 5_000) / 10_000).unwrap_or(i64::MAX)
}

/// The part of `fee` a refund gives back, when `refunded` of `amount` is refunded with it and
/// `returned_before` was given back (or is held to be) by the refunds before it that still
/// stand: the proportional share of everything refunded, rounded down, less what was given.
pub fn fee_returned(fee: i64, amount: i64, refunded: i64, returned_before: i64) -> i64 {
    if amount <= 0 {
        return 0;
    }
    let share = (i128::from(fee) * i128::from(refunded.clamp(0, amount)) / i128::from(amount)) as i64;
    (share - returned_before).max(0)
}

impl Directory {
    /// Sets the fee rate of a category (platform operators). Payments made afterwards pay it;
    /// earlier ones keep the fee they were charged.
    pub async fn set_fee_rate(&self, category: Category, rate_bp: u32) -> Result<(), DirectoryError> {
        if rate_bp > RATE_MAX_BP {
            return Err(DirectoryError::InvalidField { field: "rate_bp", message: format!("at most {RATE_MAX_BP} basis points") });
        }
        let row = ServiceRow {
            table: "fee_rates",
            key: vec![("category", Value::Text(category.code().to_owned()))],
            columns: vec![("rate_bp", Value::Int(i64::from(rate_bp))), ("updated_at", Value::Int(self.now().unix_seconds() as i64))],
            on_conflict: OnConflict::Update,
        };
        let command = Command { event: None, guards: Vec::new(), rows: vec![row], always_rows: Vec::new() };
        self.submit(command).await?.map_err(|_| DirectoryError::Unavailable("guard".into()))?;
        self.forget_merchants();
        Ok(())
    }

    /// A category's rate now, in basis points (none set: fee-free).
    pub async fn fee_rate(&self, category: Category) -> Result<u32, DirectoryError> {
        let rows = self.read("SELECT rate_bp FROM fee_rates WHERE category = ?1", vec![Value::Text(category.code().to_owned())]).await?;
        match rows.first() {
            Some(row) => u32::try_from(crate::int_at(row, 0)?).map_err(|_| DirectoryError::Storage("rate".into())),
            None => Ok(0),
        }
    }

    /// Every category's rate, in basis points.
    pub async fn fee_rates(&self) -> Result<Vec<(Category, u32)>, DirectoryError> {
        let rows = self.read("SELECT category, rate_bp FROM fee_rates ORDER BY category", Vec::new()).await?;
        rows.iter()
            .map(|row| {
                let category = Category::from_code(&crate::text_at(row, 0)?).ok_or_else(|| DirectoryError::Storage("category".into()))?;
                let rate = u32::try_from(crate::int_at(row, 1)?).map_err(|_| DirectoryError::Storage("rate".into()))?;
                Ok((category, rate))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rounds_half_up() {
        assert_eq!(fee_for(10_000, 60), 60);
        assert_eq!(fee_for(2_372, 60), 14); // 14.232
        assert_eq!(fee_for(2_500, 60), 15); // 15.0
        assert_eq!(fee_for(2_375, 60), 14); // 14.25
        assert_eq!(fee_for(2_417, 60), 15); // 14.502
        assert_eq!(fee_for(83, 60), 0); // 0.498
        assert_eq!(fee_for(84, 60), 1); // 0.504 rounds up
        assert_eq!(fee_for(10_000, 0), 0);
    }

    #[test]
    fn refunds_give_back_in_proportion_rounded_down() {
        // 100 yuan at 0.6%: 60 fen of fee.
        assert_eq!(fee_returned(60, 10_000, 3_333, 0), 19); // 19.998
        assert_eq!(fee_returned(60, 10_000, 6_666, 19), 20); // 39.996 - 19
        assert_eq!(fee_returned(60, 10_000, 10_000, 39), 21); // the rest
        assert_eq!(fee_returned(60, 10_000, 10_000, 0), 60);
    }

    #[test]
    fn a_returned_refund_does_not_let_its_fee_be_given_twice() {
        // 1 fen of fee on 2 fen. A (1 fen) crosses shards and gives back 0; B (1 fen) gives
        // back 1. A is returned: 1 fen refunded, 1 fen of fee given. C (1 fen) gives none.
        let a = fee_returned(1, 2, 1, 0);
        let b = fee_returned(1, 2, 2, a);
        assert_eq!((a, b), (0, 1));
        let given = a + b - a; // A returned
        assert_eq!(fee_returned(1, 2, 2, given), 0);
    }

    proptest! {
        /// Any sequence of refunds, some of them returned later, gives back at most the fee,
        /// and exactly the fee once the whole amount is refunded.
        #[test]
        fn refunds_never_return_more_than_the_fee(
            amount in 1i64..10_000_000,
            rate in 0u32..=RATE_MAX_BP,
            cuts in proptest::collection::vec((1i64..10_000_000, proptest::bool::ANY), 0..8),
        ) {
            let fee = fee_for(amount, rate);
            prop_assert!(fee <= amount);
            // Refunds that stand: (amount, fee given back). `given` is what the merchant got.
            let mut standing: Vec<(i64, i64)> = Vec::new();
            let mut given = 0;
            for (cut, returned_later) in cuts {
                let refunded: i64 = standing.iter().map(|r| r.0).sum();
                let refund = (cut % amount).max(1).min(amount - refunded);
                if refund == 0 { break; }
                let returned_before: i64 = standing.iter().map(|r| r.1).sum();
                let back = fee_returned(fee, amount, refunded + refund, returned_before);
                prop_assert!(back >= 0);
                standing.push((refund, back));
                given += back;
                prop_assert!(given <= fee);
                // A crossing refund returned: its amount and its fee come back.
                if returned_later {
                    let (_, back) = standing.remove(0);
                    given -= back;
                }
            }
            let returned_before: i64 = standing.iter().map(|r| r.1).sum();
            given += fee_returned(fee, amount, amount, returned_before);
            prop_assert_eq!(given, fee);
        }
    }
}
