//! `citypay bench settlement`: a day of a million payments across ten thousand merchants
//! settled through the durable ledger and the bank connector, and a resident's bills listed
//! with a million bills in the store.
//!
//! The payments are the checkout's own ledger entries (the amount to the merchant, the fee to
//! the platform), submitted straight to the writer: settlement reads nothing but the ledger,
//! and building a million trades first would only make the set-up slower. The bills go through
//! the bills service.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use citypay_bills::{Item, NewBill, Payer, PayerKind};
use citypay_directory::{BALANCE_PAYMENT, Category, NewMerchant, NewResident, PasswordPolicy, PlatformAccounts, derived_event_id, transfer_codes};
use citypay_ledger::{Currency, Entry, Event, Leg, LocalDate, Status, Transfer};
use citypay_shard::{ManualClock, ShardHandle};
use citypay_store::DbUrl;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Options of `citypay bench settlement`.
#[derive(Debug, clap::Args)]
pub(crate) struct SettlementBenchArgs {
    /// Database (must be new); default: a fresh SQLite file in a temporary directory.
    #[arg(long)]
    db: Option<DbUrl>,
    /// Payments of the day.
    #[arg(long, default_value_t = 1_000_000)]
    payments: u64,
    /// Merchants they are spread over.
    #[arg(long, default_value_t = 10_000)]
    merchants: u64,
    /// Bills in the store.
    #[arg(long, default_value_t = 1_000_000)]
    bills: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct SettlementBenchReport {
    payments: u64,
    merchants: u64,
    payments_seconds: f64,
    settle_seconds: f64,
    settle_vs_payments: f64,
    paid: usize,
    paid_fen: i64,
    expected_fen: i64,
    bills: u64,
    bill_list_calls: u64,
    bill_list_p50_us: u64,
    bill_list_p99_us: u64,
    setup_seconds: f64,
    audit_clean: bool,
}

/// 2026-11-24 in Hangzhou.
const DAY: &str = "2026-11-24";
const PAYERS: u64 = 10_000;
/// Residents whose bills are listed; each has ten.
const LISTED_RESIDENTS: u64 = 1_000;
const BILLS_PER_PAYER: u64 = 10;
const IN_FLIGHT: usize = 1_024;

#[allow(clippy::float_arithmetic, clippy::cast_precision_loss)]
pub(crate) fn run(args: &SettlementBenchArgs) -> anyhow::Result<()> {
    if args.merchants == 0 || args.payments < args.merchants || args.bills < BILLS_PER_PAYER {
        bail!("need at least one payment per merchant and {BILLS_PER_PAYER} bills");
    }
    // Small runs (the tests') register fewer payers and list fewer residents' bills.
    let payer_count = PAYERS.min(args.payments);
    let listed = LISTED_RESIDENTS.min(payer_count).min(args.bills / BILLS_PER_PAYER);
    let scratch = tempfile::Builder::new().prefix("citypay-bench-settlement").tempdir()?;
    let db = args.db.clone().unwrap_or_else(|| DbUrl::Sqlite(scratch.path().join("city.db")));
    let (keys, signing) = crate::city::load_city_keys(&db, Some(&scratch.path().join("keys")))?;
    let day = LocalDate::parse(DAY).context("the day")?;
    let clock = ManualClock::new(day.start().plus_seconds(9 * 3_600));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(async {
        let city = crate::city::open_with(&db, keys, signing, PasswordPolicy::FAST_INSECURE, Arc::new(clock.clone()), Arc::new(clock.clone()), None).await?;
        let state = city.state.clone();
        let started = Instant::now();
        let merchants = merchants(&state, args.merchants).await?;
        let wallets = payers(&state, payer_count).await?;
        let setup_seconds = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let expected_fen = pay(state.directory.shard(), &merchants, &wallets, args.payments).await?;
        let payments_seconds = started.elapsed().as_secs_f64();

        clock.set(day.next().start().plus_seconds(2 * 3_600));
        let started = Instant::now();
        let run = state.settlement.settle(day).await?;
        let settle_seconds = started.elapsed().as_secs_f64();

        let (calls, histogram) = list_bills(&state, args.bills, listed).await?;
        city.shard.shutdown();
        anyhow::Ok(SettlementBenchReport {
            payments: args.payments,
            merchants: args.merchants,
            payments_seconds,
            settle_seconds,
            settle_vs_payments: settle_seconds / payments_seconds,
            paid: run.paid,
            paid_fen: run.paid_amount,
            expected_fen,
            bills: args.bills,
            bill_list_calls: calls,
            bill_list_p50_us: histogram.value_at_quantile(0.5),
            bill_list_p99_us: histogram.value_at_quantile(0.99),
            setup_seconds,
            audit_clean: false,
        })
    })?;
    let mut source = crate::open::reader(&db)?;
    let report = SettlementBenchReport { audit_clean: citypay_store::audit(source.as_mut())?.is_clean(), ..report };
    if args.json {
        say!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        say!(
            "settlement: {} payments to {} merchants (written in {:.1} s) settled in {:.1} s: {} payouts, {} fen (expected {}); audit {}",
            report.payments,
            report.merchants,
            report.payments_seconds,
            report.settle_seconds,
            report.paid,
            report.paid_fen,
            report.expected_fen,
            if report.audit_clean { "clean" } else { "VIOLATIONS" }
        )?;
        say!(
            "bills: a resident's bills listed with {} bills in the store: p50 {} µs, p99 {} µs ({} calls)",
            report.bills, report.bill_list_p50_us, report.bill_list_p99_us, report.bill_list_calls
        )?;
    }
    if !report.audit_clean || report.paid_fen != report.expected_fen {
        bail!("the settlement does not add up, or the audit found violations");
    }
    Ok(())
}

fn uscc(region: &str, n: u64) -> anyhow::Result<String> {
    let organization = format!("MA{n:06}");
    let body = format!("{region}{organization}{}", citypay_identity::uscc::organization_check_character(&organization).context("uscc")?);
    Ok(format!("{body}{}", citypay_identity::uscc::check_character(&body).context("uscc")?))
}

fn id_number(i: u64) -> anyhow::Result<String> {
    let days = i / 1_000;
    let body = format!("330106{:04}{:02}{:02}{:03}", 1950 + (days / 336) % 50, 1 + (days / 28) % 12, 1 + days % 28, i % 1_000);
    Ok(format!("{body}{}", citypay_identity::resident_id::check_character(&body).context("check")?))
}

/// Shops, each with its ledger account id.
async fn merchants(state: &citypay_api::routes::AppState, count: u64) -> anyhow::Result<Vec<u64>> {
    state.directory.onboard_city(330100, "Hangzhou").await?;
    let mut tasks = tokio::task::JoinSet::new();
    let mut accounts = Vec::new();
    for n in 0..count {
        let directory = state.directory.clone();
        tasks.spawn(async move {
            let new = NewMerchant {
                city: 330100,
                name: format!("Shop {n}"),
                uscc: uscc("91330100", n)?,
                mcc: "5411".into(),
                category: Category::Retail,
                // Ends in 1: the sandbox bank is down for accounts ending in 0009.
                settlement_account: format!("62220202{n:010}1"),
                notify_url: None,
            };
            anyhow::Ok(directory.onboard_merchant(&new).await?.0.account)
        });
        while tasks.len() >= IN_FLIGHT {
            accounts.push(tasks.join_next().await.context("task")???);
        }
    }
    while let Some(done) = tasks.join_next().await {
        accounts.push(done??);
    }
    accounts.sort_unstable();
    Ok(accounts)
}

/// Payers' wallets, funded from custody as top-ups are.
async fn payers(state: &citypay_api::routes::AppState, count: u64) -> anyhow::Result<Vec<u64>> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut wallets = Vec::new();
    for i in 0..count {
        let state = state.clone();
        tasks.spawn(async move {
            let new = NewResident {
                city: 330100,
                name: format!("Payer {i}"),
                mobile: format!("15{i:09}"),
                id_number: id_number(i)?,
                password: "bench password".into(),
            };
            let resident = state.directory.register_resident(&new).await?;
            // Checked at a counter: class III, so the day's payments stay within its caps.
            state.directory.record_verification(resident.id, &citypay_directory::Verification::FaceToFace { operator: 0 }).await?;
            let top_up = Transfer {
                id: derived_event_id(&["bench-top-up", &i.to_string()]),
                leg: Leg {
                    debit: PlatformAccounts::CNY.sandbox_custody,
                    credit: resident.wallet,
                    amount: 10_000_000,
                    currency: Currency::CNY,
                    code: transfer_codes::TOP_UP,
                    class: 0,
                    user_data: 0,
                },
                pending_timeout_s: None,
            };
            let outcome = state.directory.shard().submit(Event::Transfer(top_up).into()).await?;
            if outcome.status != Status::Ok {
                bail!("top-up refused: {}", outcome.status.name());
            }
            anyhow::Ok(resident.wallet)
        });
        while tasks.len() >= IN_FLIGHT {
            wallets.push(tasks.join_next().await.context("task")???);
        }
    }
    while let Some(done) = tasks.join_next().await {
        wallets.push(done??);
    }
    Ok(wallets)
}

/// The day's payments; answers what settlement must pay out (amounts less fees).
async fn pay(shard: &ShardHandle, merchants: &[u64], wallets: &[u64], count: u64) -> anyhow::Result<i64> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut expected = 0;
    for i in 0..count {
        // Every payer pays about as often, and every merchant is paid about as often.
        let wallet = wallets[usize::try_from(i % wallets.len() as u64)?];
        let merchant = merchants[usize::try_from((i + i / wallets.len() as u64) % merchants.len() as u64)?];
        let amount = 500 + i64::try_from(i.wrapping_mul(7_919) % 9_500)?;
        let fee = citypay_directory::fee_for(amount, 60);
        expected += amount - fee;
        let legs = vec![
            Leg { debit: wallet, credit: merchant, amount, currency: Currency::CNY, code: transfer_codes::PAYMENT, class: BALANCE_PAYMENT, user_data: i },
            Leg { debit: merchant, credit: PlatformAccounts::CNY.fee_revenue, amount: fee, currency: Currency::CNY, code: transfer_codes::FEE, class: 0, user_data: i },
        ];
        let entry = Event::Entry(Entry { id: derived_event_id(&["bench-payment", &i.to_string()]), legs });
        let shard = shard.clone();
        tasks.spawn(async move { shard.submit(entry.into()).await });
        while tasks.len() >= IN_FLIGHT {
            let outcome = tasks.join_next().await.context("task")???;
            if outcome.status != Status::Ok {
                bail!("payment refused: {}", outcome.status.name());
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        let outcome = done??;
        if outcome.status != Status::Ok {
            bail!("payment refused: {}", outcome.status.name());
        }
    }
    Ok(expected)
}

/// Issues `count` hospital bills, ten per person (the first `listed` people are registered
/// residents), then times listing those residents' bills.
async fn list_bills(state: &citypay_api::routes::AppState, count: u64, listed: u64) -> anyhow::Result<(u64, Histogram<u64>)> {
    let new = NewMerchant {
        city: 330100,
        name: "City Hospital".into(),
        uscc: uscc("12330100", 999_999)?,
        mcc: "8062".into(),
        category: Category::Hospital,
        settlement_account: "6222020200112233446".into(),
        notify_url: None,
    };
    let hospital = state.directory.onboard_merchant(&new).await?.0.id;
    let people = count / BILLS_PER_PAYER;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..count {
        let bills = state.bills.clone();
        tasks.spawn(async move {
            let bill = NewBill {
                out_bill_no: format!("H{n}"),
                payer: Payer { kind: PayerKind::IdNumber, identifier: id_number(n % people)? },
                title: "outpatient visit".into(),
                items: vec![Item { name: "consultation".into(), amount: 5_000 }, Item { name: "medicine".into(), amount: 2_372 }],
                pick_items: false,
                insured: 0,
                due_at: u64::MAX >> 2,
                late_allowed: true,
            };
            bills.issue(hospital, &bill).await?;
            anyhow::Ok(())
        });
        while tasks.len() >= IN_FLIGHT {
            tasks.join_next().await.context("task")???;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let residents: Vec<citypay_directory::Resident> = {
        let mut found = Vec::new();
        for i in 0..listed {
            found.push(state.directory.resident_by_id_number(&id_number(i)?).await?.context("a registered payer")?);
        }
        found
    };
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut calls = 0;
    for round in 0..10 {
        for resident in &residents {
            let started = Instant::now();
            let bills = state.bills.bills_of(resident, 50).await?;
            histogram.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))?;
            if round == 0 && bills.len() != usize::try_from(BILLS_PER_PAYER)? {
                bail!("a resident sees {} bills, not {BILLS_PER_PAYER}", bills.len());
            }
            calls += 1;
        }
    }
    Ok((calls, histogram))
}
