//! Every ledger transfer code, in one place: the services write them, settlement files and
//! reports name them. A code is stored on every journal row, so a number is never reused.

/// A top-up from a bank card.
pub const TOP_UP: u16 = 10;
/// A withdrawal to a bank card.
pub const WITHDRAWAL: u16 = 11;
/// A payment to a merchant.
pub const PAYMENT: u16 = 20;
/// A refund from a merchant.
pub const REFUND: u16 = 21;
/// The platform's fee on a payment.
pub const FEE: u16 = 22;
/// The part of a fee a refund gives back.
pub const FEE_RETURNED: u16 = 23;
/// A rider's fares of a service day (or the part not charged before).
pub const FARE: u16 = 30;
/// Back to the rider: a late tap lowered the day's fare.
pub const FARE_REFUND: u16 = 31;
/// Arrears paid.
pub const ARREARS: u16 = 32;
/// The payer's part of a bill.
pub const BILL: u16 = 40;
/// The medical-insurance fund's part of a hospital bill.
pub const BILL_INSURED: u16 = 41;
/// Money paid into the medical-insurance fund's account.
pub const FUND_DEPOSIT: u16 = 42;
/// The fund's part of a bill paid wholly in cash, claimed into the patient's wallet.
pub const FUND_CLAIM: u16 = 43;
/// A merchant's settlement payout to its bank account.
pub const PAYOUT: u16 = 50;
/// Money a resident sends another.
pub const TRANSFER: u16 = 60;
/// A balance carried to the account's new shard when its city moved (`citypay cluster move`).
pub const MOVED: u16 = 70;

/// The name of a code, for files and reports.
pub fn name(code: u16) -> &'static str {
    match code {
        TOP_UP => "top_up",
        WITHDRAWAL => "withdrawal",
        PAYMENT => "payment",
        REFUND => "refund",
        FEE => "fee",
        FEE_RETURNED => "fee_returned",
        FARE => "fare",
        FARE_REFUND => "fare_refund",
        ARREARS => "arrears",
        BILL => "bill",
        BILL_INSURED => "bill_insured",
        FUND_DEPOSIT => "fund_deposit",
        FUND_CLAIM => "fund_claim",
        PAYOUT => "payout",
        TRANSFER => "transfer",
        MOVED => "moved",
        _ => "other",
    }
}
