//! `citypay settle`: the settlement run of a closed day, and each paid merchant's file.

use std::path::{Path, PathBuf};

use anyhow::Context;
use citypay_ledger::LocalDate;
use citypay_settlement::SettlementRun;

/// Pays each merchant's balance of a closed day to its bank account.
#[derive(Debug, clap::Args)]
pub(crate) struct SettleArgs {
    #[command(flatten)]
    city: crate::city::CityArgs,
    #[command(flatten)]
    remote: crate::remote::ServerArgs,
    /// The day to settle, `YYYY-MM-DD` (it must have ended in Asia/Shanghai).
    #[arg(long)]
    date: String,
    /// Also write each merchant's settlement file of the day here (`MERCHANT-DATE.csv`);
    /// not with `--server` (a merchant fetches its own from `GET /v1/settlement-files/{date}`).
    #[arg(long, conflicts_with = "server")]
    files: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &SettleArgs) -> anyhow::Result<()> {
    let date = LocalDate::parse(&args.date).context("--date: a date as YYYY-MM-DD")?;
    if let Some(server) = &args.remote.server {
        let started = std::time::Instant::now();
        let answer = crate::remote::post_as_operator(server, &args.remote.operator, "/v1/settlement-runs", &serde_json::json!({"date": args.date}))?;
        let count = |field: &str| answer[field].as_u64().and_then(|n| usize::try_from(n).ok()).with_context(|| format!("the server's answer has no {field}"));
        let run = SettlementRun {
            paid: count("paid")?,
            paid_amount: answer["paid_amount"]["amount"].as_i64().context("the server's answer has no paid_amount")?,
            carried: count("carried")?,
            failed: count("failed")?,
            already_settled: count("already_settled")?,
        };
        return print(date, &run, started.elapsed().as_secs_f64(), args.json);
    }
    args.city.with_city(async |city| settle(city, date, args.files.as_deref(), args.json).await)
}

async fn settle(city: &crate::city::City, date: LocalDate, files: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let settlement = &city.state.settlement;
    let started = std::time::Instant::now();
    let run = settlement.settle(date).await?;
    let seconds = started.elapsed().as_secs_f64();
    if let Some(dir) = files {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for payout in settlement.payouts(date).await? {
            let file = settlement.file(payout.merchant_id, date).await?;
            let path = dir.join(format!("{}-{date}.csv", payout.merchant_id));
            std::fs::write(&path, file.to_csv()).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    print(date, &run, seconds, json)
}

/// What a run did, the same whether it ran here or on a server.
fn print(date: LocalDate, run: &SettlementRun, seconds: f64, json: bool) -> anyhow::Result<()> {
    if json {
        let out = serde_json::json!({
            "date": date.to_string(),
            "paid": run.paid,
            "paid_amount": run.paid_amount,
            "carried": run.carried,
            "failed": run.failed,
            "already_settled": run.already_settled,
            "seconds": seconds,
        });
        say!("{out}")
    } else {
        say!(
            "{date}: {} merchants paid, {} fen; {} carried forward; {} refused by the bank (retried next run); {} already settled",
            run.paid, run.paid_amount, run.carried, run.failed, run.already_settled
        )
    }
}
