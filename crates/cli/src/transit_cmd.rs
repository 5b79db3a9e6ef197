//! `citypay transit`: a demo rider's ride code as a picture, a simulated validator checking
//! codes offline, and the fare run of a closed service day.

use std::path::PathBuf;

use anyhow::{Context, bail};
use citypay_ride::{CredentialTerms, Gate, PlatformKeyring, Policy, RiderDevice, RiderKey, Validator};

/// Transit subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Transit {
    /// Writes a demo rider's ride code as a picture (QR version 10, level M), signed with the
    /// platform key of the key file: PNG when the file name ends in `.png`, else SVG.
    RideCode {
        /// Where to write the picture.
        #[arg(long)]
        out: PathBuf,
        /// Key file holding the platform's ride key (created with one if missing).
        #[arg(long, default_value = "citypay.db.keys")]
        keys: PathBuf,
    },
    /// A validator at a gate, offline: checks a run of demo codes (good ones, a replay, a forged
    /// credential, an expired one, another rider's signature, a stale one, a denied rider) with
    /// only the platform's public key, and prints each decision and its time.
    Validator {
        /// Key file holding the platform's ride key.
        #[arg(long, default_value = "citypay.db.keys")]
        keys: PathBuf,
    },
    /// Rotates the platform's ride key: a new key signs from now on; the previous one still
    /// verifies during the overlap (credentials live a day, so a day or more).
    RotateKey {
        /// Key file.
        #[arg(long, default_value = "citypay.db.keys")]
        keys: PathBuf,
        /// Hours the previous key keeps verifying.
        #[arg(long, default_value_t = 48)]
        overlap_hours: u32,
    },
    /// Revokes a ride key: validators refuse every credential it signed from their next
    /// download of the ride keys.
    RevokeKey {
        /// Key file.
        #[arg(long, default_value = "citypay.db.keys")]
        keys: PathBuf,
        /// The key id.
        #[arg(long)]
        id: u16,
    },
    /// Fares a closed service day: every rider's taps priced and debited (a re-run moves only
    /// what changed).
    FareRun {
        #[command(flatten)]
        city_db: crate::city::CityArgs,
        #[command(flatten)]
        remote: crate::remote::ServerArgs,
        /// The service day, `YYYY-MM-DD`.
        #[arg(long)]
        date: String,
    },
    /// A transit operator's service day: its legs, each priced as the fare run prices it, and
    /// its fare revenue once fared.
    Legs {
        #[command(flatten)]
        city_db: crate::city::CityArgs,
        /// The service day, `YYYY-MM-DD`.
        #[arg(long)]
        date: String,
        /// The operator's merchant id.
        #[arg(long)]
        operator: u64,
        /// Most legs to list.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

fn now() -> u32 {
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    u32::try_from(seconds).unwrap_or(u32::MAX)
}

fn demo_device(platform: &citypay_ride::PlatformKey, seed: u8, account_ref: u64, valid_from: u32, valid_until: u32) -> anyhow::Result<RiderDevice> {
    let key = RiderKey::from_seed([seed; 32]);
    let terms = CredentialTerms { rider_key: key.public_bytes(), account_ref, valid_from, valid_until, ceiling_fen: citypay_transit::CREDENTIAL_CEILING_FEN };
    let credential = citypay_ride::issue_credential(platform, terms).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(RiderDevice::new(key, credential))
}

pub(crate) fn run(command: &Transit) -> anyhow::Result<()> {
    match command {
        Transit::Legs { city_db, date, operator, limit } => {
            let day = citypay_ledger::LocalDate::parse(date).context("--date: YYYY-MM-DD")?.day_number();
            city_db.with_city(async |city| {
                let transit = &city.state.transit;
                let legs = transit.operator_legs(*operator, day, None, *limit).await?;
                let (fared, revenue) = transit.revenue(*operator, day).await?;
                for leg in &legs {
                    let to = leg.to_stop.as_deref().unwrap_or(if leg.tap_out_missing { "(no tap-out)" } else { "-" });
                    println!("rider {:>20}  {:<6} {:<16} → {:<16} {}", leg.account_ref, leg.route_id, leg.from_stop, to, citypay_fares::format_fen(leg.fare_fen));
                }
                println!("{date}: {} legs listed; fared {fared} legs, {} yuan of fares", legs.len(), citypay_fares::format_fen(revenue));
                anyhow::Ok(())
            })
        }
        Transit::RideCode { out, keys } => {
            let ride_keys = crate::city::load_ride_keys(keys)?;
            let platform = ride_keys.newest()?;
            let t = now();
            let mut device = demo_device(platform, 1, 1, t, t + citypay_transit::CREDENTIAL_TTL_S)?;
            let code = device.next_code(t);
            let png = out.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
            let picture = if png { citypay_ride::render_png(&code) } else { citypay_ride::render_svg(&code).map(String::into_bytes) };
            std::fs::write(out, picture.map_err(|e| anyhow::anyhow!("{e}"))?).with_context(|| format!("writing {}", out.display()))?;
            let version = code.qr().map(|qr| citypay_ride::qr_version_number(&qr)).unwrap_or(0);
            println!("{}: a {}-byte ride code, QR version {version} at level M, valid for 60 s", out.display(), code.encode().len());
            Ok(())
        }
        Transit::Validator { keys } => validator_demo(keys),
        Transit::RotateKey { keys, overlap_hours } => {
            let id = crate::city::rotate_ride_key(keys, now(), overlap_hours.saturating_mul(3_600))?;
            println!("ride key {id} signs from now on; the previous key verifies for {overlap_hours} more hours; send the server SIGHUP (or restart it) to use it");
            Ok(())
        }
        Transit::RevokeKey { keys, id } => {
            crate::city::revoke_ride_key(keys, *id)?;
            println!("ride key {id} revoked; send the server SIGHUP (or restart it); validators refuse it from their next download");
            Ok(())
        }
        Transit::FareRun { city_db, remote, date } => {
            let day = citypay_ledger::LocalDate::parse(date).context("--date: YYYY-MM-DD")?.day_number();
            if let Some(server) = &remote.server {
                let run = crate::remote::post_as_operator(server, &remote.operator, "/v1/transit/fare-runs", &serde_json::json!({"date": date}))?;
                println!(
                    "{date}: {} riders, {} trips; {} fen charged; {} riders in arrears ({} fen); {} unchanged; {} copied codes not fared",
                    run["riders"], run["trips"], run["charged"]["amount"], run["riders_in_arrears"], run["arrears"]["amount"], run["unchanged"], run["duplicate_codes"]
                );
                return Ok(());
            }
            city_db.with_city(async |city| {
                let run = city.state.transit.fare_day(day).await?;
                println!(
                    "{date}: {} riders, {} trips; {} fen charged; {} riders in arrears ({} fen); {} unchanged; {} copied codes not fared",
                    run.riders, run.trips, run.charged, run.arrears, run.arrears_amount, run.unchanged, run.duplicates
                );
                if run.failed > 0 {
                    anyhow::bail!("{} riders could not be fared; run the day again (it moves nothing twice)", run.failed);
                }
                anyhow::Ok(())
            })
        }
    }
}

fn validator_demo(keys: &std::path::Path) -> anyhow::Result<()> {
    let ride_keys = crate::city::load_ride_keys(keys)?;
    let platform = ride_keys.newest()?;
    let mut keyring = PlatformKeyring::new();
    for key in &ride_keys.keys {
        keyring.insert(key.public());
    }
    let mut validator = Validator::new(keyring, Policy::default());
    for id in &ride_keys.revoked {
        validator.revoke_key(*id);
    }
    validator.deny_account(666);
    let t = now();
    let day = citypay_transit::CREDENTIAL_TTL_S;
    let mut alice = demo_device(platform, 1, 1, t, t + day)?;
    let mut bob = demo_device(platform, 2, 2, t, t + day)?;
    let mut expired = demo_device(platform, 3, 3, t, t + day)?;
    let mut denied = demo_device(platform, 4, 666, t, t + day)?;
    let forger = citypay_ride::PlatformKey::from_seed(1, [99; 32], citypay_ride::Validity::new(0, u32::MAX).map_err(|e| anyhow::anyhow!("{e}"))?);
    let mut forged = demo_device(&forger, 5, 5, t, t + day)?;
    let first = alice.next_code(t).encode();
    let mut tampered = bob.next_code(t).encode();
    // Another rider's signature: Bob's code with Alice's credential in it.
    tampered[1..119].copy_from_slice(&first[1..119]);
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        ("Alice boards", first.clone(), t),
        ("Alice's code again (replay)", first, t + 1),
        ("Bob boards", bob.next_code(t + 2).encode(), t + 2),
        ("Alice's next code", alice.next_code(t + 600).encode(), t + 600),
        ("a credential two days old", expired.next_code(t + 2 * day).encode(), t + 2 * day),
        ("a credential the platform never signed", forged.next_code(t).encode(), t),
        ("Bob's code carrying Alice's credential", tampered, t),
        ("a code shown ten minutes late", bob.next_code(t).encode(), t + 600),
        ("a rider on the deny list", denied.next_code(t).encode(), t),
    ];
    let gate = Gate { validator_id: 1, stop_or_route: 1, direction: citypay_ride::Direction::In };
    let mut refused = 0;
    for (what, code, at) in cases {
        let started = std::time::Instant::now();
        let decision = validator.validate(&code, at, gate);
        let micros = started.elapsed().as_micros();
        match decision {
            Ok(tap) => println!("ACCEPT  {what:<42} tap #{} ({micros} µs)", tap.sequence),
            Err(refusal) => {
                refused += 1;
                println!("REFUSE  {what:<42} {refusal} ({micros} µs)");
            }
        }
    }
    println!("{} taps queued for upload; {} signature checks", validator.pending_taps().len(), validator.signature_checks());
    if refused != 6 {
        bail!("expected 6 refusals, got {refused}");
    }
    Ok(())
}
