//! A till retrying a payment-code order is answered as the first time: found by the fault
//! simulator (`crates/sim-faults`), whose clients retry every request under its keys.

use citypay_checkout::{Checkout, CheckoutError, NewTrade};
use citypay_codes::payment_code::PaymentCode;
use citypay_directory::Category;
use citypay_shard::Clock;
use citypay_testkit::TestCity;

fn order(no: &str, fen: i64) -> NewTrade {
    NewTrade { out_trade_no: no.into(), amount: fen, subject: "goods".into(), timeout_s: None, notify: None, cashier: None }
}

#[test]
fn a_refused_code_payment_retried_gets_the_same_refusal_even_once_the_code_expired() {
    let city = TestCity::new(&[citypay_checkout::MIGRATIONS]);
    let checkout = Checkout::new(city.directory.clone());
    let (alice, shop) = city.rt.block_on(async {
        (city.resident("11010519491231002X", "13800138000", 100).await, city.merchant("91350100M000100Y43", Category::Retail, "6217000010001").await)
    });
    let (slot, secret) = city.rt.block_on(checkout.enroll_device(&alice)).expect("a phone");
    let code = PaymentCode::generate(slot, secret.expose(), city.clock.now().unix_seconds());
    let first = city.rt.block_on(checkout.pay_with_code(shop, &order("P1", 500), &code)).expect_err("the wallet holds 1 yuan");
    assert!(matches!(first, CheckoutError::Refused(_)), "{first:?}");
    // The till's retry of that order with that code answers the refusal again, not "code
    // used", and still does once the code has expired.
    let again = city.rt.block_on(checkout.pay_with_code(shop, &order("P1", 500), &code)).expect_err("refused again");
    assert_eq!(again.code(), first.code());
    // Seconds later, with the wallet topped up meanwhile: the same code's retry is the same
    // ledger entry, so the refusal is replayed, never judged again.
    city.advance(7);
    city.rt.block_on(async {
        let cards = city.wallet.cards(&alice).await.expect("cards");
        city.wallet.top_up(&alice, cards[0].id, 10_000, "refill").await.expect("topped up");
    });
    let topped_up = city.rt.block_on(checkout.pay_with_code(shop, &order("P1", 500), &code)).expect_err("still refused");
    assert_eq!(topped_up.code(), first.code());
    city.advance(3_600);
    let later = city.rt.block_on(checkout.pay_with_code(shop, &order("P1", 500), &code)).expect_err("refused again");
    assert_eq!(later.code(), first.code());
    // The spent code pays no other order.
    let other = city.rt.block_on(checkout.pay_with_code(shop, &order("P2", 50), &code)).expect_err("a spent code");
    assert!(matches!(other, CheckoutError::InvalidCode(_) | CheckoutError::CodeUsed), "{other:?}");
    city.assert_books_balance();
}
