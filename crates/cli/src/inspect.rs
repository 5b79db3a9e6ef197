//! `citypay inspect`: what a number or payload from a support ticket is, or precisely why it is
//! invalid. Exit 0 when valid (warnings included), 1 when invalid; clap exits 2 on usage errors.
//! Personal numbers are printed masked only.

use std::process::ExitCode;

use citypay_codes::mpm::{Initiation, Payload, RawPayload, Scheme};
use citypay_identity::{CardNumber, CivilDate, ResidentId, Sex, Uscc};
use serde_json::{Value, json};

/// What to inspect.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Inspect {
    /// A PRC resident ID number (GB 11643).
    Id {
        /// The 18-character number.
        number: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A Unified Social Credit Code (GB 32100).
    Uscc {
        /// The 18-character code.
        code: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// An EMVCo merchant-presented QR payload (the text inside the QR code).
    Qr {
        /// The payload, e.g. `000201010211...6304XXXX`.
        payload: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A bank card number.
    Card {
        /// The card number (spaces and dashes allowed).
        pan: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The verdict on one input.
struct Finding {
    kind: &'static str,
    fields: Vec<(&'static str, Value)>,
    warnings: Vec<String>,
    error: Option<String>,
}

pub(crate) fn run(what: &Inspect) -> anyhow::Result<ExitCode> {
    let (finding, json) = match what {
        Inspect::Id { number, json } => (resident_id(number.trim()), *json),
        Inspect::Uscc { code, json } => (uscc(code.trim()), *json),
        Inspect::Card { pan, json } => (card(pan.trim()), *json),
        Inspect::Qr { payload, json } => (qr(payload.trim()), *json),
    };
    print(&finding, json)?;
    Ok(if finding.error.is_some() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Today in the city's time zone, from the host clock.
fn today() -> CivilDate {
    let now = citypay_shard::Clock::now(&citypay_shard::SystemClock);
    let date = now.local_date();
    let year = u16::try_from(date.year).unwrap_or(u16::MAX);
    CivilDate::new(year, date.month, date.day).unwrap_or_else(|| CivilDate::new(2000, 1, 1).expect("a real date"))
}

fn resident_id(number: &str) -> Finding {
    match ResidentId::parse(number, today()) {
        Ok(id) => Finding {
            kind: "resident_id",
            fields: vec![
                ("masked", json!(id.masked())),
                ("region_code", json!(id.region_code())),
                ("birth_date", json!(id.birth_date().to_string())),
                ("sex", json!(if id.sex() == Sex::Male { "male" } else { "female" })),
            ],
            warnings: Vec::new(),
            error: None,
        },
        Err(e) => invalid("resident_id", e.to_string()),
    }
}

fn uscc(code: &str) -> Finding {
    match Uscc::parse(code) {
        Ok(u) => Finding {
            kind: "uscc",
            fields: vec![
                ("code", json!(u.as_str())),
                ("registration_authority", json!(u.registration_authority().to_string())),
                ("organization_category", json!(u.organization_category().to_string())),
                ("region_code", json!(u.region_code())),
                ("organization_code", json!(u.organization_code())),
                ("check_character", json!(u.check_character().to_string())),
            ],
            warnings: Vec::new(),
            error: None,
        },
        Err(e) => invalid("uscc", e.to_string()),
    }
}

fn card(pan: &str) -> Finding {
    match CardNumber::parse(pan) {
        Ok(parsed) => Finding {
            kind: "card",
            fields: vec![
                ("masked", json!(parsed.card.masked())),
                ("brand", json!(parsed.card.brand().to_string())),
                ("luhn", json!(parsed.card.passes_luhn())),
            ],
            warnings: parsed.warnings.iter().map(ToString::to_string).collect(),
            error: None,
        },
        Err(e) => invalid("card", e.to_string()),
    }
}

fn scheme_name(scheme: &Scheme) -> String {
    match scheme {
        Scheme::Citypay { merchant_id } => format!("citypay (merchant {merchant_id})"),
        Scheme::Pix => "Pix".into(),
        Scheme::PromptPay => "PromptPay".into(),
        Scheme::PayNow => "PayNow".into(),
        Scheme::UnionPay => "UnionPay".into(),
        Scheme::Reserved { id, network } => format!("{network} (ID {id:02})"),
        Scheme::Other(gui) => format!("other ({gui})"),
    }
}

fn qr(text: &str) -> Finding {
    let payload = match Payload::decode(text) {
        Ok(payload) => payload,
        Err(error) => {
            let mut finding = invalid("qr", error.to_string());
            // Framing and CRC may still be fine: say whose payload it is.
            if let Ok(raw) = RawPayload::decode(text) {
                let schemes: Vec<String> = raw.schemes().iter().map(scheme_name).collect();
                finding.fields.push(("schemes", json!(schemes)));
            }
            return finding;
        }
    };
    let schemes: Vec<String> = payload.schemes().iter().map(scheme_name).collect();
    let mut fields = vec![
        ("initiation", json!(match payload.initiation() {
            Some(Initiation::Static) => "static",
            Some(Initiation::Dynamic) => "dynamic",
            None => "unspecified",
        })),
        ("schemes", json!(schemes)),
        ("merchant_category_code", json!(payload.mcc())),
        ("currency", json!(payload.currency())),
        ("amount", json!(payload.amount().map(|a| a.as_str().to_owned()))),
        ("country", json!(payload.country())),
        ("merchant_name", json!(payload.name())),
        ("merchant_city", json!(payload.city())),
        ("crc", json!(payload.raw().crc())),
    ];
    if let Some(merchant) = payload.citypay_merchant() {
        fields.push(("citypay_merchant", json!(merchant)));
    }
    if let Some(reference) = payload.additional_data().and_then(|a| a.reference_label.clone()) {
        fields.push(("reference_label", json!(reference)));
    }
    if let Some(language) = payload.language() {
        fields.push(("alternate_name", json!(format!("{} ({})", language.name, language.preference))));
    }
    let mut warnings: Vec<String> = payload.warnings().iter().map(ToString::to_string).collect();
    if payload.citypay_merchant().is_some() && payload.require_complete().is_err() {
        warnings.push("citypay's own payloads are complete: citypay refuses to pay this one".into());
    }
    if payload.citypay_merchant().is_none() {
        warnings.push(format!("not a citypay payload ({}): citypay refuses it as \"scheme not accepted\"", schemes.join(", ")));
    }
    Finding { kind: "qr", fields, warnings, error: None }
}

fn invalid(kind: &'static str, error: String) -> Finding {
    Finding { kind, fields: Vec::new(), warnings: Vec::new(), error: Some(error) }
}

fn print(finding: &Finding, json: bool) -> anyhow::Result<()> {
    if json {
        let fields: serde_json::Map<String, Value> =
            finding.fields.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        let value = json!({
            "kind": finding.kind,
            "valid": finding.error.is_none(),
            "fields": fields,
            "warnings": finding.warnings,
            "error": finding.error,
        });
        return say!("{value:#}");
    }
    match &finding.error {
        Some(error) => say!("invalid {}: {error}", finding.kind.replace('_', " "))?,
        None => {
            say!("valid {}", finding.kind.replace('_', " "))?;
            for (name, value) in &finding.fields {
                let text = match value {
                    Value::String(text) => text.clone(),
                    Value::Array(items) => items.iter().map(|i| i.as_str().unwrap_or_default().to_owned()).collect::<Vec<_>>().join(", "),
                    Value::Null => "none".to_owned(),
                    other => other.to_string(),
                };
                say!("  {name}: {text}")?;
            }
        }
    }
    for warning in &finding.warnings {
        say!("  warning: {warning}")?;
    }
    Ok(())
}
