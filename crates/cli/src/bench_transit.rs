//! `citypay bench transit`: how fast a validator checks ride codes (one core, against a bare
//! Ed25519 verification loop in the same run), and the morning rush: a million taps uploaded by
//! the validators, turned into trips, fared and debited through the durable ledger.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use citypay_directory::{Category, NewMerchant, NewResident, PasswordPolicy};
use citypay_ride::{CredentialTerms, Gate, PlatformKey, PlatformKeyring, Policy, RiderDevice, RiderKey, Validator, Validity};
use citypay_shard::ManualClock;
use citypay_store::DbUrl;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Options of `citypay bench transit`.
#[derive(Debug, clap::Args)]
pub(crate) struct TransitBenchArgs {
    /// Database (must be new); default: a fresh SQLite file in a temporary directory.
    #[arg(long)]
    db: Option<DbUrl>,
    /// Taps of the morning rush (four per rider: bus, metro in and out, bus back).
    #[arg(long, default_value_t = 1_000_000)]
    taps: u64,
    /// Ride codes the validator checks.
    #[arg(long, default_value_t = 200_000)]
    verifications: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct TransitBenchReport {
    verifications: u64,
    verifications_per_second_per_core: f64,
    verify_p50_us: u64,
    verify_p99_us: u64,
    raw_ed25519_verifications_per_second: f64,
    verifications_vs_raw: f64,
    taps: u64,
    riders: u64,
    setup_seconds: f64,
    rush_seconds: f64,
    upload_seconds: f64,
    fare_seconds: f64,
    trips: u64,
    charged_fen: i64,
    riders_in_arrears: u64,
    audit_clean: bool,
}

/// 2017-08-01 00:00 in Tianjin.
const DAY_START: u64 = 1_501_516_800;

#[allow(clippy::float_arithmetic, clippy::cast_precision_loss)]
pub(crate) fn run(args: &TransitBenchArgs) -> anyhow::Result<()> {
    if args.taps < 4 || args.verifications == 0 {
        bail!("need at least 4 taps and 1 verification");
    }
    let (verifications, histogram, seconds, raw_per_second) = verify_loop(args.verifications)?;
    let scratch = tempfile::Builder::new().prefix("citypay-bench-transit").tempdir()?;
    let db = args.db.clone().unwrap_or_else(|| DbUrl::Sqlite(scratch.path().join("city.db")));
    let keys_path = scratch.path().join("keys");
    let (keys, ride_key) = crate::city::load_city_keys(&db, Some(&keys_path))?;
    let clock = ManualClock::new(citypay_ledger::Timestamp::from_unix_seconds(DAY_START - 3_600));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let riders = args.taps / 4;
    let (setup_seconds, upload_seconds, fare_seconds, run) = runtime.block_on(async {
        let city = crate::city::open_with(&db, keys, ride_key, PasswordPolicy::FAST_INSECURE, Arc::new(clock.clone()), Arc::new(clock.clone()), None).await?;
        let state = city.state.clone();
        let started = Instant::now();
        let (validators, account_refs) = set_up(&state, riders).await?;
        let setup_seconds = started.elapsed().as_secs_f64();
        let taps = rush_taps(&validators, &account_refs);
        clock.set(citypay_ledger::Timestamp::from_unix_seconds(DAY_START + 23 * 3_600));
        let started = Instant::now();
        let mut uploads = tokio::task::JoinSet::new();
        for (validator, taps) in taps {
            let transit = state.transit.clone();
            uploads.spawn(async move { transit.upload_taps(&validator, &taps).await });
        }
        while let Some(done) = uploads.join_next().await {
            done??;
        }
        let upload_seconds = started.elapsed().as_secs_f64();
        clock.set(citypay_ledger::Timestamp::from_unix_seconds(DAY_START + 30 * 3_600 + 60));
        let started = Instant::now();
        let service_day = i64::try_from((DAY_START + 8 * 3_600) / 86_400).unwrap_or(0);
        let run = state.transit.fare_day(service_day).await?;
        let fare_seconds = started.elapsed().as_secs_f64();
        city.shard.shutdown();
        anyhow::Ok((setup_seconds, upload_seconds, fare_seconds, run))
    })?;
    let mut source = crate::open::reader(&db)?;
    let audit_clean = citypay_store::audit(source.as_mut())?.is_clean();
    let per_second = verifications as f64 / seconds;
    let report = TransitBenchReport {
        verifications,
        verifications_per_second_per_core: per_second,
        verify_p50_us: histogram.value_at_quantile(0.5),
        verify_p99_us: histogram.value_at_quantile(0.99),
        raw_ed25519_verifications_per_second: raw_per_second,
        verifications_vs_raw: per_second / raw_per_second,
        taps: riders * 4,
        riders,
        setup_seconds,
        rush_seconds: upload_seconds + fare_seconds,
        upload_seconds,
        fare_seconds,
        trips: run.trips,
        charged_fen: run.charged,
        riders_in_arrears: run.arrears,
        audit_clean,
    };
    if args.json {
        say!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        say!(
            "validator: {:.0} verifications/s on one core (p99 {} µs), {:.0}% of a bare Ed25519 loop ({:.0}/s)",
            report.verifications_per_second_per_core,
            report.verify_p99_us,
            report.verifications_vs_raw * 100.0,
            report.raw_ed25519_verifications_per_second
        )?;
        say!(
            "rush: {} taps of {} riders uploaded in {:.1} s and fared in {:.1} s ({:.1} s in all): {} trips, {} fen; audit {}",
            report.taps,
            report.riders,
            report.upload_seconds,
            report.fare_seconds,
            report.rush_seconds,
            report.trips,
            report.charged_fen,
            if audit_clean { "clean" } else { "VIOLATIONS" }
        )?;
    }
    if !audit_clean {
        bail!("the audit found violations");
    }
    Ok(())
}

/// One validator checking `n` codes of 1,000 riders on this thread, then a bare Ed25519
/// verification loop of the same length.
#[allow(clippy::float_arithmetic, clippy::cast_precision_loss)]
fn verify_loop(n: u64) -> anyhow::Result<(u64, Histogram<u64>, f64, f64)> {
    let validity = Validity::new(0, u32::MAX).map_err(|e| anyhow::anyhow!("{e}"))?;
    let platform = PlatformKey::from_seed(1, [42; 32], validity);
    let mut keyring = PlatformKeyring::new();
    keyring.insert(platform.public());
    let t0 = u32::try_from(DAY_START).unwrap_or(0);
    let mut devices: Vec<RiderDevice> = (0..1_000u64)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&i.to_le_bytes());
            let key = RiderKey::from_seed(seed);
            let terms = CredentialTerms { rider_key: key.public_bytes(), account_ref: i + 1, valid_from: t0, valid_until: t0 + 86_400, ceiling_fen: 5_000 };
            let credential = citypay_ride::issue_credential(&platform, terms).map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(RiderDevice::new(key, credential))
        })
        .collect::<anyhow::Result<_>>()?;
    // Codes are made first: the rider's phone signs them, not the validator.
    let codes: Vec<(Vec<u8>, u32)> = (0..n)
        .map(|i| {
            let t = t0 + u32::try_from(i / 100).unwrap_or(0);
            let device = &mut devices[usize::try_from(i % 1_000).unwrap_or(0)];
            (device.next_code(t).encode(), t)
        })
        .collect();
    let policy = Policy { seen_capacity: 1 << 20, ..Policy::default() };
    let mut validator = Validator::new(keyring, policy);
    let gate = Gate { validator_id: 1, stop_or_route: 1, direction: citypay_ride::Direction::In };
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).context("histogram")?;
    let started = Instant::now();
    for (code, t) in &codes {
        let one = Instant::now();
        validator.validate(code, *t, gate).map_err(|e| anyhow::anyhow!("a valid code was refused: {e}"))?;
        histogram.saturating_record(u64::try_from(one.elapsed().as_micros()).unwrap_or(u64::MAX).max(1));
    }
    let seconds = started.elapsed().as_secs_f64();
    // The baseline: the same number of bare verifications of one signature.
    use ed25519_dalek::{Signer, SigningKey};
    let key = SigningKey::from_bytes(&[7; 32]);
    let message = [1u8; 127];
    let signature = key.sign(&message);
    let verifying = key.verifying_key();
    let started = Instant::now();
    for _ in 0..n {
        verifying.verify_strict(std::hint::black_box(&message), &signature).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let raw = n as f64 / started.elapsed().as_secs_f64();
    Ok((n, histogram, seconds, raw))
}

/// The operator, a validator at every stop, and `riders` riders with money and a ride account.
async fn set_up(state: &citypay_api::routes::AppState, riders: u64) -> anyhow::Result<(Vec<(String, bool, Vec<citypay_transit::ValidatorInfo>)>, Vec<u64>)> {
    let d = &state.directory;
    d.onboard_city(120000, "Tianjin").await?;
    let organization = "MA000000";
    let body = format!("91120102{organization}{}", citypay_identity::uscc::organization_check_character(organization).context("uscc")?);
    let uscc = format!("{body}{}", citypay_identity::uscc::check_character(&body).context("uscc")?);
    let (operator, _) = d
        .onboard_merchant(&NewMerchant {
            city: 120000,
            name: "天津公交地铁".into(),
            uscc,
            mcc: "4111".into(),
            category: Category::Transit,
            settlement_account: "6222020200112233446".into(),
            notify_url: None,
        })
        .await?;
    let mut lines = Vec::new();
    let routes: Vec<(String, bool)> = state.transit.feed().routes().map(|(r, _, gated)| (r.to_owned(), gated)).collect();
    for (n, (route, gated)) in routes.into_iter().enumerate() {
        let mut validators = Vec::new();
        for (i, stop) in state.transit.feed().route_stops(&route).to_vec().iter().enumerate() {
            let key = citypay_ride::DeviceKey::from_seed([u8::try_from(n).unwrap_or(0), u8::try_from(i).unwrap_or(0), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30]);
            validators.push(state.transit.register_validator(operator.id, &route, stop, key.public_bytes()).await?);
        }
        lines.push((route, gated, validators));
    }
    let mut tasks = tokio::task::JoinSet::new();
    let mut refs = Vec::new();
    for i in 0..riders {
        let state = state.clone();
        tasks.spawn(async move { rider(&state, i).await });
        while tasks.len() >= 512 {
            refs.push(tasks.join_next().await.context("task")???);
        }
    }
    while let Some(r) = tasks.join_next().await {
        refs.push(r??);
    }
    refs.sort_unstable();
    Ok((lines, refs))
}

async fn rider(state: &citypay_api::routes::AppState, i: u64) -> anyhow::Result<u64> {
    let days = i / 1_000;
    let body = format!("120102{:04}{:02}{:02}{:03}", 1950 + (days / 336) % 50, 1 + (days / 28) % 12, 1 + days % 28, i % 1_000);
    let id = format!("{body}{}", citypay_identity::resident_id::check_character(&body).context("check")?);
    let resident = state
        .directory
        .register_resident(&NewResident {
            city: 120000,
            name: format!("Rider {i}"),
            mobile: format!("15{i:09}"),
            id_number: id,
            password: "bench password".into(),
        })
        .await?;
    let card = crate::city::bench_wallet(state, &resident).await?;
    state.wallet.top_up(&resident, card, 10_000, "bench").await?;
    Ok(state.transit.account_ref(&resident).await?)
}

/// Each rider's morning and evening: bus, then metro in and out, and the bus home; the taps
/// grouped by validator with each validator's own sequence numbers.
fn rush_taps(
    lines: &[(String, bool, Vec<citypay_transit::ValidatorInfo>)],
    riders: &[u64],
) -> Vec<(citypay_transit::ValidatorInfo, Vec<citypay_ride::Tap>)> {
    let buses: Vec<&citypay_transit::ValidatorInfo> = lines.iter().filter(|l| !l.1).filter_map(|l| l.2.first()).collect();
    let metro: Vec<&Vec<citypay_transit::ValidatorInfo>> = lines.iter().filter(|l| l.1).map(|l| &l.2).collect();
    let mut by_validator: HashMap<u32, (citypay_transit::ValidatorInfo, Vec<citypay_ride::Tap>)> = HashMap::new();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut push = |v: &citypay_transit::ValidatorInfo, account_ref: u64, time: u64, direction: citypay_ride::Direction, rng: &mut fastrand::Rng| {
        let entry = by_validator.entry(v.id).or_insert_with(|| (v.clone(), Vec::new()));
        let mut code_hash = [0u8; 32];
        code_hash.iter_mut().for_each(|b| *b = rng.u8(..));
        let sequence = u64::try_from(entry.1.len()).unwrap_or(0) + 1;
        entry.1.push(citypay_ride::Tap {
            validator_id: v.id,
            sequence,
            stop_or_route: 0,
            direction,
            time: u32::try_from(time).unwrap_or(u32::MAX),
            account_ref,
            code_hash,
        });
    };
    for (i, account_ref) in riders.iter().enumerate() {
        let t0 = DAY_START + 7 * 3_600 + u64::try_from(i % 7_200).unwrap_or(0);
        let bus = buses[i % buses.len().max(1)];
        let line = metro[i % metro.len().max(1)];
        let from = rng.usize(..line.len());
        let to = (from + 1 + rng.usize(..line.len() - 1)) % line.len();
        push(bus, *account_ref, t0, citypay_ride::Direction::In, &mut rng);
        push(&line[from], *account_ref, t0 + 1_200, citypay_ride::Direction::In, &mut rng);
        push(&line[to], *account_ref, t0 + 1_200 + 180 * u64::try_from(from.abs_diff(to)).unwrap_or(1), citypay_ride::Direction::Out, &mut rng);
        push(bus, *account_ref, t0 + 10 * 3_600, citypay_ride::Direction::In, &mut rng);
    }
    by_validator.into_values().collect()
}
