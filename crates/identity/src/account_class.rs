//! Real-name payment-account classes (KYC tiers) and their balance-payment limits.

use core::fmt;

/// Fen (分) in one yuan.
const FEN_PER_YUAN: i64 = 100;

/// A PBOC real-name payment-account class, set by how the holder's identity was verified.
///
/// From PBOC's 非银行支付机构网络支付业务管理办法 (Administrative Measures for Online Payment
/// Business of Non-bank Payment Institutions, announced 2015-12-28, in force 2016-07-01):
/// class I is verified through one external channel (e.g. an online check of the ID card),
/// class II face to face or through at least three external channels, class III face to face
/// or through at least five.
///
/// The limits of [`AccountClass::balance_payment_limit`] bound *balance payments* only:
/// payments funded from the account balance. Top-ups and payments funded from a bank card are
/// not bound by them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccountClass {
    /// Class I (Ⅰ类): one external verification channel; 1,000 yuan since opening.
    I,
    /// Class II (Ⅱ类): face to face or ≥3 external channels; 100,000 yuan a year.
    II,
    /// Class III (Ⅲ类): face to face or ≥5 external channels; 200,000 yuan a year.
    III,
}

/// The period over which balance payments add up towards a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitWindow {
    /// Cumulative since the account was opened.
    SinceOpening,
    /// Cumulative over a year (年累计).
    Year,
}

/// The most an account may pay from its balance over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BalancePaymentLimit {
    /// Over which period payments add up.
    pub window: LimitWindow,
    /// The cumulative limit in fen (1 yuan = 100 fen).
    pub amount_fen: i64,
}

impl AccountClass {
    /// Every class, lowest first.
    pub const ALL: [Self; 3] = [Self::I, Self::II, Self::III];

    /// The cumulative limit on payments funded from the balance (not top-ups).
    #[must_use]
    pub const fn balance_payment_limit(self) -> BalancePaymentLimit {
        let (window, yuan) = match self {
            Self::I => (LimitWindow::SinceOpening, 1_000),
            Self::II => (LimitWindow::Year, 100_000),
            Self::III => (LimitWindow::Year, 200_000),
        };
        BalancePaymentLimit {
            window,
            amount_fen: yuan * FEN_PER_YUAN,
        }
    }

    /// The class that verification earns: class III face to face or through at least five
    /// external channels, class II through at least three, class I otherwise (a real-name
    /// registration is where every account starts).
    #[must_use]
    pub const fn for_verifications(external_channels: usize, face_to_face: bool) -> Self {
        if face_to_face || external_channels >= 5 {
            Self::III
        } else if external_channels >= 3 {
            Self::II
        } else {
            Self::I
        }
    }

    /// The stable code: `"I"`, `"II"` or `"III"`.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::I => "I",
            Self::II => "II",
            Self::III => "III",
        }
    }

    /// The class for a code from [`AccountClass::code`] (exact, upper case), or `None`.
    #[must_use]
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|class| class.code() == code)
    }
}

impl fmt::Display for AccountClass {
    /// The code, e.g. `II`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::{AccountClass, BalancePaymentLimit, LimitWindow};

    #[test]
    fn limits_in_fen() {
        let limit = |window, amount_fen| BalancePaymentLimit { window, amount_fen };
        assert_eq!(
            AccountClass::I.balance_payment_limit(),
            limit(LimitWindow::SinceOpening, 100_000)
        );
        assert_eq!(
            AccountClass::II.balance_payment_limit(),
            limit(LimitWindow::Year, 10_000_000)
        );
        assert_eq!(
            AccountClass::III.balance_payment_limit(),
            limit(LimitWindow::Year, 20_000_000)
        );
    }

    #[test]
    fn class_follows_verification() {
        assert_eq!(AccountClass::for_verifications(0, false), AccountClass::I);
        assert_eq!(AccountClass::for_verifications(2, false), AccountClass::I);
        assert_eq!(AccountClass::for_verifications(3, false), AccountClass::II);
        assert_eq!(AccountClass::for_verifications(4, false), AccountClass::II);
        assert_eq!(AccountClass::for_verifications(5, false), AccountClass::III);
        assert_eq!(AccountClass::for_verifications(0, true), AccountClass::III);
    }

    #[test]
    fn codes_round_trip() {
        for class in AccountClass::ALL {
            assert_eq!(AccountClass::from_code(class.code()), Some(class));
            assert_eq!(class.to_string(), class.code());
        }
        assert_eq!(AccountClass::from_code("ii"), None);
        assert_eq!(AccountClass::from_code("IV"), None);
        assert_eq!(AccountClass::from_code(""), None);
    }
}
