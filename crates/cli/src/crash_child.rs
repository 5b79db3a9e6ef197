//! `citypay crash-child`: a writer under load for the crash test. It reads transfers from
//! stdin, one per line (`ID DEBIT CREDIT AMOUNT`, or `ACCOUNT ID` to open an account), submits
//! them all concurrently, and prints `ID STATUS REPLAY` for each as soon as it is durable. The
//! test kills it with SIGKILL at random moments.

use std::io::{BufRead, Write};

use citypay_ledger::{AccountFlags, Currency, Event, Leg, Limits, NewAccount, Transfer};
use citypay_shard::{Command, Shard, ShardConfig, SystemClock};
use citypay_store::DbUrl;

pub(crate) fn run(db: &DbUrl) -> anyhow::Result<()> {
    let store = crate::open::writer(db, &[])?;
    let shard = Shard::start(store, ShardConfig::DEFAULT, SystemClock)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let (acks, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    acks.send("ready".to_owned())?;
    let printer = std::thread::spawn(move || {
        let mut out = std::io::stdout().lock();
        while let Some(line) = ack_rx.blocking_recv() {
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                return;
            }
        }
    });
    let handle = shard.handle();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let event = parse(&line)?;
        let (handle, acks) = (handle.clone(), acks.clone());
        let id = event.id();
        let command = Command::from(event);
        runtime.spawn(async move {
            let line = match handle.submit(command).await {
                Ok(outcome) => format!("{id} {} {}", outcome.status, outcome.replay),
                Err(error) => format!("{id} error {}", error.to_string().replace(' ', "_")),
            };
            let _ = acks.send(line);
        });
    }
    drop(acks);
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    shard.shutdown();
    let _ = printer.join();
    Ok(())
}

fn parse(line: &str) -> anyhow::Result<Event> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let event = match fields.as_slice() {
        ["ACCOUNT", id] => Event::CreateAccount(NewAccount {
            id: id.parse()?,
            currency: Currency::CNY,
            flags: if *id == "1" { AccountFlags::NONE } else { AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS },
            code: 1,
            limits: Limits::NONE,
        }),
        [id, debit, credit, amount] => Event::Transfer(Transfer {
            id: id.parse()?,
            leg: Leg {
                debit: debit.parse()?,
                credit: credit.parse()?,
                amount: amount.parse()?,
                currency: Currency::CNY,
                code: 1,
                class: 1,
                user_data: 0,
            },
            pending_timeout_s: None,
        }),
        _ => anyhow::bail!("cannot parse {line:?}"),
    };
    Ok(event)
}
