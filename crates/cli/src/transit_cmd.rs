//! `citypay transit`: a demo rider's ride code as a picture, a validator checking a code (or a
//! demo run of good and bad ones) offline, and the fare run of a closed service day.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use citypay_ride::{CredentialTerms, Gate, PlatformKeyring, Policy, RiderDevice, RiderKey, Validator};

/// Writes a line to stdout. A reader that went away (`| head`) makes it an error that `main`
/// ends the command on quietly, never a panic.

/// Transit subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Transit {
    /// Writes a demo rider's ride code as a picture (QR version 10, level M), signed with the
    /// platform key of the key file: PNG when the file name ends in `.png`, else SVG.
    RideCode {
        /// Where to write the picture.
        #[arg(long)]
        out: PathBuf,
        /// Key file holding the platform's ride key.
        #[arg(long, default_value = "citypay.db.keys")]
        keys: PathBuf,
        /// Create the key file (with a new platform key) if it is missing.
        #[arg(long)]
        create_keys: bool,
    },
    /// A validator at a gate, offline, with only the platform's public keys: checks the code
    /// given with `--code` (exit 0 accepted, 1 refused), or else a run of demo codes (good ones,
    /// a replay, a forged credential, an expired one, another rider's signature, a stale one, a
    /// denied rider), and prints each decision and its time.
    Validator {
        /// Key file holding the platform's ride keys.
        #[arg(long, default_value = "citypay.db.keys")]
        keys: PathBuf,
        /// Create the key file (with a new platform key) if it is missing.
        #[arg(long)]
        create_keys: bool,
        /// A ride code to check: a PNG picture of it (as `ride-code --out FILE.png` writes), or
        /// text holding its 382 hex digits (as `ride-code` prints); `-` reads standard input.
        #[arg(long)]
        code: Option<PathBuf>,
    },
    /// Rotates the platform's ride key: a new key signs from now on; the previous one still
    /// verifies during the overlap (credentials live a day, so a day or more).
    RotateKey {
        /// Key file (a city of one server; with `--server`, unused).
        #[arg(long, default_value = "citypay.db.keys")]
        keys: PathBuf,
        /// Hours the previous key keeps verifying.
        #[arg(long, default_value_t = 48)]
        overlap_hours: u32,
        /// Rotate for the whole city through this server: every server takes the new key
        /// from the database within seconds, and no key file changes.
        #[command(flatten)]
        remote: crate::remote::ServerArgs,
    },
    /// Revokes a ride key: validators refuse every credential it signed from their next
    /// download of the ride keys.
    RevokeKey {
        /// Key file (a city of one server; with `--server`, unused).
        #[arg(long, default_value = "citypay.db.keys")]
        keys: PathBuf,
        /// The key id.
        #[arg(long)]
        id: u16,
        /// Revoke for the whole city through this server.
        #[command(flatten)]
        remote: crate::remote::ServerArgs,
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

/// Refuses a missing key file unless told to create one: a mistyped `--keys` would otherwise
/// mint a platform key that no server knows, whose codes every validator refuses.
fn existing_key_file(path: &Path, create: bool) -> anyhow::Result<()> {
    if create || std::env::var_os("CITYPAY_RIDE_KEY").is_some() || !matches!(path.try_exists(), Ok(false)) {
        return Ok(());
    }
    bail!("no key file at {}: name the city's key file with --keys (or pass --create-keys for a new platform key)", path.display())
}

/// Runs a transit command; its exit code (a validator's refusal is 1).
pub(crate) fn run(command: &Transit) -> anyhow::Result<ExitCode> {
    match command {
        Transit::Validator { keys, create_keys, code } => {
            existing_key_file(keys, *create_keys)?;
            match code {
                Some(source) => check_code(keys, source),
                None => validator_demo(keys).map(|()| ExitCode::SUCCESS),
            }
        }
        Transit::Legs { city_db, date, operator, limit } => {
            let day = citypay_ledger::LocalDate::parse(date).context("--date: YYYY-MM-DD")?.day_number();
            city_db.with_city(async |city| {
                let merchant = match city.state.directory.merchant(*operator).await {
                    Err(citypay_directory::DirectoryError::NotFound) => bail!("no merchant {operator}: --operator takes a transit operator's merchant id"),
                    found => found?,
                };
                if merchant.category != citypay_directory::Category::Transit {
                    bail!("merchant {operator} is not a transit operator");
                }
                let transit = &city.state.transit;
                let legs = transit.operator_legs(*operator, day, None, *limit).await?;
                let (fared, revenue) = transit.revenue(*operator, day).await?;
                for leg in &legs {
                    let to = leg.to_stop.as_deref().unwrap_or(if leg.tap_out_missing { "(no tap-out)" } else { "-" });
                    say!("rider {:>20}  {:<6} {:<16} → {:<16} {}", leg.account_ref, leg.route_id, leg.from_stop, to, citypay_fares::format_fen(leg.fare_fen))?;
                }
                say!("{date}: {} legs listed; fared {fared} legs, {} yuan of fares", legs.len(), citypay_fares::format_fen(revenue))?;
                anyhow::Ok(())
            })
            .map(|()| ExitCode::SUCCESS)
        }
        Transit::RideCode { out, keys, create_keys } => {
            existing_key_file(keys, *create_keys)?;
            let ride_keys = crate::city::load_ride_keys(keys)?;
            let platform = ride_keys.newest()?;
            let t = now();
            let mut device = demo_device(platform, 1, 1, t, t + citypay_transit::CREDENTIAL_TTL_S)?;
            let code = device.next_code(t);
            let png = out.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
            let picture = if png { citypay_ride::render_png(&code) } else { citypay_ride::render_svg(&code).map(String::into_bytes) };
            std::fs::write(out, picture.map_err(|e| anyhow::anyhow!("{e}"))?).with_context(|| format!("writing {}", out.display()))?;
            let version = code.qr().map(|qr| citypay_ride::qr_version_number(&qr)).unwrap_or(0);
            say!("{}: a {}-byte ride code, QR version {version} at level M, valid for 60 s; in hex:", out.display(), code.encode().len())?;
            say!("{}", citypay_directory::hex::encode(&code.encode())).map(|()| ExitCode::SUCCESS)
        }
        Transit::RotateKey { keys, overlap_hours, remote } => {
            if let Some(server) = &remote.server {
                let key = crate::remote::post_as_operator(server, &remote.operator, "/v1/transit/ride-keys", &serde_json::json!({"overlap_hours": overlap_hours}))?;
                return say!("ride key {} signs from now on on every server of the city; the previous key verifies for {overlap_hours} more hours", key["key_id"])
                    .map(|()| ExitCode::SUCCESS);
            }
            existing_key_file(keys, false)?;
            let id = crate::city::rotate_ride_key(keys, now(), overlap_hours.saturating_mul(3_600))?;
            say!("ride key {id} signs from now on; the previous key verifies for {overlap_hours} more hours; send the server SIGHUP (or restart it) to use it").map(|()| ExitCode::SUCCESS)
        }
        Transit::RevokeKey { keys, id, remote } => {
            if let Some(server) = &remote.server {
                crate::remote::post_as_operator(server, &remote.operator, &format!("/v1/transit/ride-keys/{id}/revocation"), &serde_json::json!({}))?;
                return say!("ride key {id} revoked on every server of the city; validators refuse it from their next download").map(|()| ExitCode::SUCCESS);
            }
            existing_key_file(keys, false)?;
            crate::city::revoke_ride_key(keys, *id)?;
            say!("ride key {id} revoked; send the server SIGHUP (or restart it); validators refuse it from their next download").map(|()| ExitCode::SUCCESS)
        }
        Transit::FareRun { city_db, remote, date } => {
            let day = citypay_ledger::LocalDate::parse(date).context("--date: YYYY-MM-DD")?.day_number();
            if let Some(server) = &remote.server {
                // The server answers 503 when riders could not be fared, so a success fared them all.
                let answer = crate::remote::post_as_operator(server, &remote.operator, "/v1/transit/fare-runs", &serde_json::json!({"date": date}))?;
                let number = |value: &serde_json::Value, field: &str| value.as_i64().with_context(|| format!("the server's answer has no {field}"));
                let run = citypay_transit::FareRun {
                    days: Vec::new(),
                    riders: number(&answer["riders"], "riders")?.unsigned_abs(),
                    trips: number(&answer["trips"], "trips")?.unsigned_abs(),
                    charged: number(&answer["charged"]["amount"], "charged")?,
                    arrears: number(&answer["riders_in_arrears"], "riders_in_arrears")?.unsigned_abs(),
                    arrears_amount: number(&answer["arrears"]["amount"], "arrears")?,
                    unchanged: number(&answer["unchanged"], "unchanged")?.unsigned_abs(),
                    duplicates: number(&answer["duplicate_codes"], "duplicate_codes")?.unsigned_abs(),
                    failed: 0,
                };
                return say_fare_run(date, &run).map(|()| ExitCode::SUCCESS);
            }
            city_db.with_city(async |city| {
                let run = city.state.transit.fare_day(day).await?;
                say_fare_run(date, &run)?;
                if run.failed > 0 {
                    anyhow::bail!("{} riders could not be fared; run the day again (it moves nothing twice)", run.failed);
                }
                anyhow::Ok(())
            })
            .map(|()| ExitCode::SUCCESS)
        }
    }
}

/// What a fare run did, the same whether it ran here or on a server.
fn say_fare_run(date: &str, run: &citypay_transit::FareRun) -> anyhow::Result<()> {
    say!(
        "{date}: {} riders, {} trips; {} fen charged; {} riders in arrears ({} fen); {} unchanged; {} copied codes not fared",
        run.riders, run.trips, run.charged, run.arrears, run.arrears_amount, run.unchanged, run.duplicates
    )
}

/// A validator holding the public halves of the key file's ride keys, with its revocations.
fn offline_validator(ride_keys: &crate::city::SigningKeys) -> Validator {
    let mut keyring = PlatformKeyring::new();
    for key in &ride_keys.keys {
        keyring.insert(key.public());
    }
    let mut validator = Validator::new(keyring, Policy::default());
    for id in &ride_keys.revoked {
        validator.revoke_key(*id);
    }
    validator
}

/// Checks one real ride code now, as a gate would: exit 0 accepted, 1 refused.
fn check_code(keys: &Path, source: &Path) -> anyhow::Result<ExitCode> {
    let code = read_code(source)?;
    let mut validator = offline_validator(&crate::city::load_ride_keys(keys)?);
    let gate = Gate { validator_id: 1, stop_or_route: 1, direction: citypay_ride::Direction::In };
    let started = std::time::Instant::now();
    let decision = validator.validate(&code, now(), gate);
    let micros = started.elapsed().as_micros();
    match decision {
        Ok(tap) => {
            say!("ACCEPT  the ride code of account {} ({micros} µs)", tap.account_ref)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(refusal) => {
            say!("REFUSE  {refusal} ({micros} µs)")?;
            Ok(ExitCode::from(1))
        }
    }
}

/// A ride code's bytes from `source` (`-`: standard input): a PNG picture of its QR code, or
/// text holding its hex digits as one word (what `ride-code` prints).
fn read_code(source: &Path) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if source == Path::new("-") {
        std::io::stdin().read_to_end(&mut bytes).context("reading the code from standard input")?;
    } else {
        bytes = std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
    }
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return qr_in_png(&bytes);
    }
    let text = String::from_utf8_lossy(&bytes);
    text.split_whitespace()
        .find_map(citypay_directory::hex::decode::<{ citypay_ride::CODE_LEN }>)
        .map(|code| code.to_vec())
        .with_context(|| format!("no ride code found: a PNG picture of one, or its {} hex digits as text", 2 * citypay_ride::CODE_LEN))
}

/// The bytes of the QR code in a PNG picture (any colour type, any size).
fn qr_in_png(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().context("reading the PNG picture")?;
    let mut pixels = vec![0; reader.output_buffer_size().context("a PNG picture too large")?];
    let frame = reader.next_frame(&mut pixels).context("reading the PNG picture")?;
    let (width, height) = (usize::try_from(frame.width)?, usize::try_from(frame.height)?);
    let samples = frame.color_type.samples();
    let colour = matches!(frame.color_type, png::ColorType::Rgb | png::ColorType::Rgba);
    let line = frame.line_size;
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| {
        let at = y * line + x * samples;
        if colour {
            let sum: u32 = pixels[at..at + 3].iter().map(|v| u32::from(*v)).sum();
            u8::try_from(sum / 3).unwrap_or(u8::MAX)
        } else {
            pixels[at]
        }
    });
    let grids = image.detect_grids();
    let grid = grids.first().context("no QR code found in the picture")?;
    let mut decoded = Vec::new();
    grid.decode_to(&mut decoded).map_err(|e| anyhow::anyhow!("the QR code in the picture does not read: {e}"))?;
    Ok(decoded)
}

fn validator_demo(keys: &std::path::Path) -> anyhow::Result<()> {
    let ride_keys = crate::city::load_ride_keys(keys)?;
    let platform = ride_keys.newest()?;
    let mut validator = offline_validator(&ride_keys);
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
            Ok(tap) => say!("ACCEPT  {what:<42} tap #{} ({micros} µs)", tap.sequence)?,
            Err(refusal) => {
                refused += 1;
                say!("REFUSE  {what:<42} {refusal} ({micros} µs)")?;
            }
        }
    }
    say!("{} taps queued for upload; {} signature checks", validator.pending_taps().len(), validator.signature_checks())?;
    if refused != 6 {
        bail!("expected 6 refusals, got {refused}");
    }
    Ok(())
}
