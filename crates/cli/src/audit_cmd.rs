//! `citypay audit`.

use std::process::ExitCode;

use citypay_store::DbUrl;

pub(crate) fn run(db: &DbUrl, json: bool) -> anyhow::Result<ExitCode> {
    let mut source = crate::open::reader(db)?;
    let report = citypay_store::audit(source.as_mut())?;
    if json {
        let value = serde_json::json!({
            "clean": report.is_clean(),
            "accounts": report.accounts,
            "journal_rows": report.journal_rows,
            "rejections": report.rejections,
            "currency_sums": report.currency_sums.iter().map(|(c, s)| (c.clone(), s.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
            "violations": report.violations,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!(
            "{}: {} accounts, {} journal rows, {} rejections",
            db.redacted(),
            report.accounts,
            report.journal_rows,
            report.rejections
        );
        for (currency, sum) in &report.currency_sums {
            println!("  {currency}: balances sum to {sum}");
        }
        if report.is_clean() {
            println!("the books are clean");
        } else {
            println!("{} violations:", report.violations.len());
            for v in &report.violations {
                println!("  {v}");
            }
        }
    }
    Ok(if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
