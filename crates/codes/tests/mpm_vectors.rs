//! Published MPM payloads: they must decode with a valid CRC and the right fields.

use citypay_codes::mpm::{Initiation, MpmError, MpmWarning, Payload, RawPayload, Scheme};

/// The example payload of the EMV QRCPS Merchant-Presented Mode specification (v1.0 July
/// 2017, kept in v1.1 November 2020), CRC A13A. Text as reproduced, among many, by the
/// exemvi Elixir library's `@official_sample` and the C#/Java CRC demos found with the code
/// search; `../shared/guide/domain.md` section 4.1 records it too.
const EMVCO_EXAMPLE: &str = "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001\
030812345678520441115802CN5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京540523.72\
53031565502016233030412340603***0708A60086670902ME91320016A0112233449988770708123456786304A13A";

/// Banco Central do Brasil's static Pix ("copia e cola") example, as quoted in
/// brazilian-utils/rust src/pix_payload.rs (commit 00ac30185b0695ee45fb3b166872e17681909c80).
const PIX_STATIC: &str = "00020126580014br.gov.bcb.pix0136123e4567-e12b-12d1-a456-426655440000\
5204000053039865802BR5913Fulano de Tal6008BRASILIA62070503***63041D3D";

/// PromptPay payloads from dtinth/promptpay-qr index.test.js (commit
/// 75ead17790a472df6fed9fd03c33f6debd0f203e): phone 080-123-4567, national id
/// 1111111111111, and phone 000-000-0000 with amount 4.22.
const PROMPTPAY_PHONE: &str =
    "00020101021129370016A000000677010111011300668012345675802TH530376463046197";
const PROMPTPAY_NATIONAL_ID: &str =
    "00020101021129370016A000000677010111021311111111111115802TH530376463047B5A";
const PROMPTPAY_AMOUNT: &str =
    "00020101021229370016A000000677010111011300660000000005802TH530376454044.226304E469";

#[test]
fn emvco_example_decodes_with_its_crc() {
    let payload = Payload::decode(EMVCO_EXAMPLE).unwrap();
    assert_eq!(payload.raw().crc(), "A13A");
    assert_eq!(payload.initiation(), Some(Initiation::Dynamic));
    assert_eq!(payload.mcc(), Some("4111"));
    assert_eq!(payload.currency(), Some("156"));
    assert_eq!(payload.amount().unwrap().as_str(), "23.72");
    assert_eq!(payload.amount_minor_units(), Some(2372));
    assert_eq!(payload.country(), Some("CN"));
    assert_eq!(payload.name(), Some("BEST TRANSPORT"));
    assert_eq!(payload.city(), Some("BEIJING"));
    assert_eq!(payload.postal_code(), None);
    assert_eq!(payload.citypay_merchant(), None);
}

#[test]
fn emvco_example_templates() {
    let payload = Payload::decode(EMVCO_EXAMPLE).unwrap();
    let language = payload.language().unwrap();
    assert_eq!(language.preference, "ZH");
    assert_eq!(language.name, "最佳运输");
    assert_eq!(language.city.as_deref(), Some("北京"));
    let extra = payload.additional_data().unwrap();
    assert_eq!(extra.store_label.as_deref(), Some("1234"));
    assert_eq!(extra.customer_label.as_deref(), Some("***"));
    assert_eq!(extra.terminal_label.as_deref(), Some("A6008667"));
    assert_eq!(extra.bill_number, None);
    assert_eq!(extra.reference_label, None);
    let consumer_request = payload.raw().get(62).unwrap().child_value(9);
    assert_eq!(consumer_request, Some("ME"));
    let unreserved = payload.raw().get(91).unwrap();
    assert_eq!(unreserved.child_value(0), Some("A011223344998877"));
    assert_eq!(unreserved.child_value(7), Some("12345678"));
    let account = payload.raw().get(29).unwrap();
    assert_eq!(account.child_value(5), Some("A93FO3230Q"));
}

#[test]
fn emvco_example_keeps_its_order_and_schemes() {
    let payload = Payload::decode(EMVCO_EXAMPLE).unwrap();
    let ids: Vec<u8> = payload.raw().objects().iter().map(|o| o.id()).collect();
    assert_eq!(
        ids,
        [0, 1, 29, 31, 52, 58, 59, 60, 64, 54, 53, 55, 62, 91, 63]
    );
    let expected = [
        Scheme::Other("D15600000000".to_owned()),
        Scheme::Other("D15600000001".to_owned()),
    ];
    assert_eq!(payload.schemes(), expected);
    // Offsets count characters: 54 follows the Chinese text of 64.
    let amount = payload.raw().get(54).unwrap();
    assert_eq!(
        amount.offset(),
        EMVCO_EXAMPLE.chars().position(|c| c == '.').unwrap() - 6
    );
}

#[test]
fn emvco_example_encodes_back_to_itself() {
    let payload = Payload::decode(EMVCO_EXAMPLE).unwrap();
    assert_eq!(payload.encode(), EMVCO_EXAMPLE);
}

#[test]
fn pix_static_example() {
    let payload = Payload::decode(PIX_STATIC).unwrap();
    assert_eq!(payload.raw().crc(), "1D3D");
    assert_eq!(payload.schemes(), [Scheme::Pix]);
    assert_eq!(payload.initiation(), None);
    assert_eq!(payload.mcc(), Some("0000"));
    assert_eq!(payload.currency(), Some("986"));
    assert_eq!(payload.amount(), None);
    assert_eq!(payload.country(), Some("BR"));
    assert_eq!(payload.name(), Some("Fulano de Tal"));
    assert_eq!(payload.city(), Some("BRASILIA"));
    let txid = payload
        .additional_data()
        .unwrap()
        .reference_label
        .as_deref();
    assert_eq!(txid, Some("***"));
    let key = payload.raw().get(26).unwrap().child_value(1);
    assert_eq!(key, Some("123e4567-e12b-12d1-a456-426655440000"));
    assert_eq!(payload.encode(), PIX_STATIC);
}

/// The static account QR of the NAPAS VietQR (IBFT) specification v1.5.2, the example that
/// VietQR libraries test against (subiz/vietqr keeps the specification in `spec/`): bank BIN
/// 970403, account 0011012345678, service QRIBFTTA. Like PromptPay's, it has no 52, 59 or 60.
const VIETQR_STATIC: &str = "00020101021138570010A00000072701270006970403011200110123456780208\
QRIBFTTA53037045802VN6304F4E5";

/// The mandatory fields that PromptPay's and VietQR's generators leave out.
fn missing_52_59_60() -> [MpmWarning; 3] {
    [
        (52, "merchant category code"),
        (59, "merchant name"),
        (60, "merchant city"),
    ]
    .map(|(id, name)| MpmWarning::MissingField { id, name })
}

#[test]
fn promptpay_examples_are_read_with_their_missing_fields_as_warnings() {
    for text in [PROMPTPAY_PHONE, PROMPTPAY_NATIONAL_ID, PROMPTPAY_AMOUNT] {
        let raw = RawPayload::decode(text).unwrap();
        assert_eq!(raw.schemes(), [Scheme::PromptPay]);
        assert_eq!(raw.value(53), Some("764"));
        // PromptPay's personal codes leave out 52, 59 and 60, which EMVCo makes mandatory:
        // banks' apps read them, and so does the decoder, listing what is missing.
        let payload = Payload::decode(text).unwrap();
        assert_eq!(payload.schemes(), [Scheme::PromptPay]);
        assert_eq!(
            (payload.currency(), payload.country()),
            (Some("764"), Some("TH"))
        );
        assert_eq!(
            (payload.mcc(), payload.name(), payload.city()),
            (None, None, None)
        );
        assert_eq!(payload.warnings(), missing_52_59_60());
        let strict = MpmError::MissingField {
            id: 52,
            name: "merchant category code",
        };
        assert_eq!(payload.require_complete(), Err(strict));
        assert_eq!(raw.encode(), text);
    }
    let payload = Payload::decode(PROMPTPAY_AMOUNT).unwrap();
    assert_eq!(payload.amount_minor_units(), Some(422));
    let raw = RawPayload::decode(PROMPTPAY_AMOUNT).unwrap();
    assert_eq!(raw.value(1), Some("12"));
    assert_eq!(raw.value(54), Some("4.22"));
    assert_eq!(raw.crc(), "E469");
    let account = raw.get(29).unwrap();
    assert_eq!(account.child_value(1), Some("0066000000000"));
}

#[test]
fn vietqr_example_is_read_with_its_missing_fields_as_warnings() {
    let payload = Payload::decode(VIETQR_STATIC).unwrap();
    assert_eq!(payload.raw().crc(), "F4E5");
    let gui = Scheme::Other("A000000727".to_owned());
    assert_eq!(payload.schemes(), [gui]);
    assert_eq!(payload.initiation(), Some(Initiation::Static));
    assert_eq!(
        (payload.currency(), payload.country()),
        (Some("704"), Some("VN"))
    );
    assert_eq!(payload.warnings(), missing_52_59_60());
    assert_eq!(payload.encode(), VIETQR_STATIC);
}
