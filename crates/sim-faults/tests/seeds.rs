//! The fault simulator's seeds. CI runs seeds from 1 for at most `CI_SECONDS`;
//! `CITYPAY_SIM_SEEDS=N` runs seeds 1 to N instead (for hours), and `CITYPAY_SIM_SEED=S`
//! replays one seed. A failure names its seed.

use std::time::{Duration, Instant};

use citypay_sim_faults::{Config, Report, run};

/// How long CI spends on seeds (the whole file stays within the 90 seconds).
const CI_SECONDS: u64 = 40;

fn seeds() -> (Vec<u64>, Option<Duration>) {
    if let Ok(seed) = std::env::var("CITYPAY_SIM_SEED") {
        return (vec![seed.parse().expect("CITYPAY_SIM_SEED is a number")], None);
    }
    match std::env::var("CITYPAY_SIM_SEEDS") {
        Ok(n) => ((1..=n.parse().expect("CITYPAY_SIM_SEEDS is a number")).collect(), None),
        Err(_) => ((1..=10_000).collect(), Some(Duration::from_secs(CI_SECONDS))),
    }
}

#[test]
fn every_seed_keeps_the_books() {
    let (seeds, budget) = seeds();
    let started = Instant::now();
    let mut total = Report::default();
    let mut ran = 0;
    for seed in seeds {
        if budget.is_some_and(|b| started.elapsed() > b) {
            break;
        }
        let report = run(Config::for_seed(seed)).unwrap_or_else(|failure| panic!("{failure}"));
        ran += 1;
        total.add(&report);
    }
    eprintln!("{ran} seeds in {:.1} s: {total}", started.elapsed().as_secs_f64());
    assert!(ran >= 1);
}

#[test]
fn a_seed_replays_bit_for_bit() {
    let config = Config { steps: 150, ..Config::for_seed(7) };
    let first = run(config).unwrap_or_else(|failure| panic!("{failure}"));
    let second = run(config).unwrap_or_else(|failure| panic!("{failure}"));
    assert!(first.restarts > 0 && first.refused + first.lost > 0, "the seed injects faults: {first:?}");
    assert_eq!(first, second, "the same seed ran differently");
    let other = run(Config { seed: 8, ..config }).unwrap_or_else(|failure| panic!("{failure}"));
    assert_ne!(first.digest, other.digest, "another seed runs another simulation");
}

#[test]
fn a_planted_acknowledgement_before_the_commit_is_found() {
    // The writer answers each batch before committing it: a refused commit then leaves
    // acknowledged payments undone. The CI seeds must catch it, with the seed that replays it.
    for seed in 1..=3 {
        match run(Config { plant_ack_before_commit: true, ..Config::for_seed(seed) }) {
            Err(failure) => {
                eprintln!("found: {failure}");
                assert_eq!(failure.seed, seed);
                assert!(failure.step > 0 && !failure.message.starts_with("set-up"), "the simulation ran: {failure}");
                let again = run(Config { plant_ack_before_commit: true, ..Config::for_seed(seed) }).expect_err("the seed replays the failure");
                assert_eq!((again.step, again.message), (failure.step, failure.message));
                return;
            }
            Ok(report) => eprintln!("seed {seed} missed it: {report:?}"),
        }
    }
    panic!("the planted bug went unnoticed");
}
