//! citypay's own QR payloads: encode, then decode to the same fields.

use citypay_codes::mpm::{
    AmountError, BuildError, Charge, CitypayQr, Initiation, LanguageTemplate, Payload, Scheme,
};

fn sticker() -> CitypayQr {
    CitypayQr {
        merchant_id: "M-0001".into(),
        mcc: "5812".into(),
        currency: "156".into(),
        country: "CN".into(),
        name: "CITY CAFE".into(),
        city: "SHANGHAI".into(),
        postal_code: None,
        language: None,
        charge: Charge::Static,
    }
}

fn order() -> CitypayQr {
    CitypayQr {
        postal_code: Some("200000".into()),
        language: Some(LanguageTemplate {
            preference: "ZH".into(),
            name: "城市咖啡".into(),
            city: Some("上海".into()),
        }),
        charge: Charge::Dynamic {
            amount_minor: 2372,
            order_number: "ORD-20260101-0001".into(),
        },
        ..sticker()
    }
}

#[test]
fn static_sticker_has_the_documented_layout() {
    let text = sticker().encode().unwrap();
    let body = "000201010211\
                26240010cn.citypay0106M-0001\
                52045812530315658\
                02CN5909CITY CAFE6008SHANGHAI6304";
    assert_eq!(&text[..text.len() - 4], body);
    let payload = Payload::decode(&text).unwrap();
    assert_eq!(payload.initiation(), Some(Initiation::Static));
    assert_eq!(payload.amount(), None);
    assert_eq!(payload.additional_data(), None);
    assert_eq!(
        payload.schemes(),
        [Scheme::Citypay {
            merchant_id: "M-0001".into()
        }]
    );
    assert_eq!(payload.citypay_merchant(), Some("M-0001"));
    assert_eq!(payload.encode(), text);
}

#[test]
fn dynamic_order_round_trips() {
    let qr = order();
    let text = qr.encode().unwrap();
    let payload = Payload::decode(&text).unwrap();
    assert_eq!(payload.initiation(), Some(Initiation::Dynamic));
    assert_eq!(payload.amount().unwrap().as_str(), "23.72");
    assert_eq!(payload.amount_minor_units(), Some(2372));
    let reference = payload
        .additional_data()
        .unwrap()
        .reference_label
        .as_deref();
    assert_eq!(reference, Some("ORD-20260101-0001"));
    assert_eq!(payload.language(), qr.language.as_ref());
    assert_eq!(payload.postal_code(), Some("200000"));
    assert_eq!(
        (payload.mcc(), payload.currency(), payload.country()),
        (Some("5812"), Some("156"), Some("CN"))
    );
    assert_eq!(
        (payload.name(), payload.city()),
        (Some("CITY CAFE"), Some("SHANGHAI"))
    );
    assert_eq!(
        payload.warnings(),
        [],
        "citypay's own payloads are complete"
    );
    assert_eq!(payload.require_complete(), Ok(()));
    assert_eq!(payload.encode(), text);
}

#[test]
fn builder_refuses_what_it_cannot_write() {
    let invalid = |qr: CitypayQr, field: &str| match qr.encode() {
        Err(BuildError::Invalid { field: found, .. }) => assert_eq!(found, field),
        other => panic!("{field}: expected Invalid, got {other:?}"),
    };
    invalid(
        CitypayQr {
            merchant_id: "商户".into(),
            ..sticker()
        },
        "merchant id",
    );
    invalid(
        CitypayQr {
            mcc: "581".into(),
            ..sticker()
        },
        "MCC",
    );
    invalid(
        CitypayQr {
            currency: "CNY".into(),
            ..sticker()
        },
        "currency",
    );
    invalid(
        CitypayQr {
            country: "cn".into(),
            ..sticker()
        },
        "country",
    );
    invalid(
        CitypayQr {
            name: "城市咖啡".into(),
            ..sticker()
        },
        "merchant name",
    );
    invalid(
        CitypayQr {
            name: "A".repeat(26),
            ..sticker()
        },
        "merchant name",
    );
    invalid(
        CitypayQr {
            city: String::new(),
            ..sticker()
        },
        "merchant city",
    );
    invalid(
        CitypayQr {
            postal_code: Some("12345678901".into()),
            ..sticker()
        },
        "postal code",
    );
    let charge = Charge::Dynamic {
        amount_minor: 1,
        order_number: "A".repeat(26),
    };
    invalid(
        CitypayQr {
            charge,
            ..sticker()
        },
        "order number",
    );
    let language = LanguageTemplate {
        preference: "Z".into(),
        name: "x".into(),
        city: None,
    };
    invalid(
        CitypayQr {
            language: Some(language),
            ..sticker()
        },
        "language preference",
    );
    let language = LanguageTemplate {
        preference: "ZH".into(),
        name: "a\nb".into(),
        city: None,
    };
    invalid(
        CitypayQr {
            language: Some(language),
            ..sticker()
        },
        "alternate name",
    );
}

#[test]
fn builder_refuses_bad_amounts() {
    let charge = |amount_minor| Charge::Dynamic {
        amount_minor,
        order_number: "1".into(),
    };
    let qr = CitypayQr {
        charge: charge(0),
        ..sticker()
    };
    assert_eq!(qr.encode(), Err(BuildError::ZeroAmount));
    let qr = CitypayQr {
        charge: charge(u64::MAX),
        ..sticker()
    };
    let reason = AmountError::TooLong { chars: 21 };
    assert_eq!(
        qr.encode(),
        Err(BuildError::Amount {
            amount_minor: u64::MAX,
            reason
        })
    );
    let qr = CitypayQr {
        charge: charge(1),
        currency: "999".into(),
        ..sticker()
    };
    assert_eq!(
        qr.encode(),
        Err(BuildError::UnknownCurrency {
            currency: "999".into()
        })
    );
    let qr = CitypayQr {
        charge: charge(1_500),
        currency: "392".into(),
        ..sticker()
    };
    let payload = Payload::decode(&qr.encode().unwrap()).unwrap();
    assert_eq!(payload.amount().unwrap().as_str(), "1500");
}
