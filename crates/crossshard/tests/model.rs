//! The cross-shard protocol, model-checked with `stateright`: two shards, two transfers from a
//! payer on shard 1 to a payee on shard 2, driven through this crate's own `reserve`, `decide`
//! and `apply`. Every interleaving is explored: messages lost, duplicated and reordered, either
//! shard's connections dropped (a crash between committing a step and sending its message),
//! the resolver asking at any moment (before or after the first answer), the payee frozen, the
//! payee's limit reached. The checker asserts that every transfer ends posted on both shards or
//! rejected and voided, that no money is created or lost on either shard, that the clearing
//! accounts mirror each other (up to what is decided and not yet applied), and that from every
//! state the transfers can still finish once messages get through.
//!
//! It is also shown to find the bugs it is there for: a decision row without its uniqueness,
//! and a payer's shard that gives up on its own after a timeout.

use std::collections::BTreeSet;

use citypay_crossshard::{Crossing, Decision, Message, Movement, PayerStatus, Rejection, apply, decide, reserve, resolve};
use stateright::{Checker, Model, Property};

const PAYER_START: i64 = 120;
const PAYEE_LIMIT: i64 = 100;
const TRANSFERS: [Crossing; 2] = [
    Crossing { id: 1, payer_shard: 1, payee_shard: 2, payer: 10, payee: 20, amount: 30 },
    Crossing { id: 2, payer_shard: 1, payee_shard: 2, payer: 10, payee: 20, amount: 80 },
];

/// The deliberate bugs the checker must find.
#[derive(Clone, Copy, Default)]
struct Bugs {
    /// The payee's shard does not see its stored decision (no unique row per transfer id).
    decisions_not_unique: bool,
    /// The payer's shard voids a reservation on its own after a timeout.
    payer_times_out: bool,
}

struct CrossShard {
    bugs: Bugs,
}

/// Both shards' stored state and the messages between them.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct World {
    /// Shard 1: the payer's posted balance, what is reserved of it, the clearing account for
    /// shard 2 (posted), and each transfer's outbox row (`None`: not started).
    payer_posted: i64,
    payer_held: i64,
    clearing_1: i64,
    reserved: [Option<PayerStatus>; 2],
    refused: [bool; 2],
    /// Shard 2: the payee's posted balance, the clearing account for shard 1, the decision rows.
    payee_posted: i64,
    clearing_2: i64,
    decisions: [Option<Decision>; 2],
    frozen: bool,
    /// Messages in flight (a set: a message delivered twice is a duplicate delivery).
    network: BTreeSet<Message>,
    /// Decisions the payer's shard refused as contradicting what it did.
    conflicts: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Action {
    /// A client starts transfer `i` on the payer's shard.
    Start(usize),
    /// A message arrives and is used up.
    Deliver(Message),
    /// A message arrives and a copy stays in flight (it will arrive again).
    Duplicate(Message),
    /// A message is lost.
    Lose(Message),
    /// The payer's resolver asks about transfer `i`.
    Resolve(usize),
    /// The payee's account is frozen from now on.
    Freeze,
    /// The payer's shard crashes: the answers on their way to it are lost.
    CrashPayer,
    /// The payee's shard crashes: the asks on their way to it are lost.
    CrashPayee,
    /// (A bug) the payer's shard gives transfer `i` up on its own.
    GiveUp(usize),
}

fn index(id: u128) -> usize {
    usize::try_from(id).unwrap() - 1
}

impl CrossShard {
    /// The state once every message gets through and the resolver asks about what is left,
    /// with no more faults.
    fn finished(&self, world: &World) -> World {
        let mut world = world.clone();
        for _ in 0..8 {
            for i in 0..2 {
                if world.reserved[i] == Some(PayerStatus::Prepared) {
                    world = self.next_state(&world, Action::Resolve(i)).unwrap_or(world);
                }
            }
            while let Some(message) = world.network.iter().next().copied() {
                world = self.next_state(&world, Action::Deliver(message)).unwrap_or(world);
            }
        }
        world
    }
}

impl Model for CrossShard {
    type State = World;
    type Action = Action;

    fn init_states(&self) -> Vec<World> {
        vec![World {
            payer_posted: PAYER_START,
            payer_held: 0,
            clearing_1: 0,
            reserved: [None; 2],
            refused: [false; 2],
            payee_posted: 0,
            clearing_2: 0,
            decisions: [None; 2],
            frozen: false,
            network: BTreeSet::new(),
            conflicts: 0,
        }]
    }

    fn actions(&self, world: &World, actions: &mut Vec<Action>) {
        for i in 0..2 {
            if world.reserved[i].is_none() && !world.refused[i] {
                actions.push(Action::Start(i));
            }
            if world.reserved[i] == Some(PayerStatus::Prepared) {
                actions.push(Action::Resolve(i));
                if self.bugs.payer_times_out {
                    actions.push(Action::GiveUp(i));
                }
            }
        }
        for message in &world.network {
            actions.push(Action::Deliver(*message));
            actions.push(Action::Duplicate(*message));
            actions.push(Action::Lose(*message));
        }
        if !world.frozen {
            actions.push(Action::Freeze);
        }
        if world.network.iter().any(|m| matches!(m, Message::Decided { .. })) {
            actions.push(Action::CrashPayer);
        }
        if world.network.iter().any(|m| !matches!(m, Message::Decided { .. })) {
            actions.push(Action::CrashPayee);
        }
    }

    fn next_state(&self, last: &World, action: Action) -> Option<World> {
        let mut world = last.clone();
        match action {
            Action::Start(i) => match reserve(&TRANSFERS[i], world.payer_posted - world.payer_held) {
                Ok(reserved) => {
                    let Movement::Reserve { amount, .. } = reserved.movement else { unreachable!("a reservation reserves") };
                    world.payer_held += amount;
                    world.reserved[i] = Some(reserved.status);
                    world.network.insert(reserved.send);
                }
                Err(_) => world.refused[i] = true,
            },
            Action::Deliver(message) | Action::Duplicate(message) => {
                if matches!(action, Action::Deliver(_)) {
                    world.network.remove(&message);
                }
                match message {
                    Message::Decide(crossing) | Message::Resolve(crossing) => {
                        let i = index(crossing.id);
                        let stored = if self.bugs.decisions_not_unique { None } else { world.decisions[i] };
                        let receivable = if world.frozen {
                            Err(Rejection::PayeeFrozen)
                        } else if world.payee_posted + crossing.amount > PAYEE_LIMIT {
                            Err(Rejection::OverLimit)
                        } else {
                            Ok(())
                        };
                        let decided = decide(stored, &message, receivable).expect("an ask is answered");
                        if let Some((decision, movement)) = decided.write {
                            world.decisions[i] = Some(decision);
                            if let Some(Movement::Post { amount, .. }) = movement {
                                world.clearing_2 -= amount;
                                world.payee_posted += amount;
                            }
                        }
                        world.network.insert(decided.send);
                    }
                    Message::Decided { id, decision } => {
                        let i = index(id);
                        let status = world.reserved[i].expect("answers come only for reserved transfers");
                        match apply(status, decision) {
                            Ok(Some((status, movement))) => {
                                let amount = TRANSFERS[i].amount;
                                world.payer_held -= amount;
                                if movement == Movement::PostReserved {
                                    world.payer_posted -= amount;
                                    world.clearing_1 += amount;
                                }
                                world.reserved[i] = Some(status);
                            }
                            Ok(None) => {}
                            Err(_) => world.conflicts = world.conflicts.saturating_add(1),
                        }
                    }
                }
            }
            Action::Lose(message) => {
                world.network.remove(&message);
            }
            Action::Resolve(i) => {
                world.network.insert(resolve(&TRANSFERS[i]));
            }
            Action::Freeze => world.frozen = true,
            Action::CrashPayer => world.network.retain(|m| !matches!(m, Message::Decided { .. })),
            Action::CrashPayee => world.network.retain(|m| matches!(m, Message::Decided { .. })),
            Action::GiveUp(i) => {
                if let Ok(Some((status, _))) = apply(PayerStatus::Prepared, Decision::Rejected(Rejection::Timeout)) {
                    world.payer_held -= TRANSFERS[i].amount;
                    world.reserved[i] = Some(status);
                }
            }
        }
        Some(world)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("every transfer ends the same way on both shards", |_, w: &World| {
                w.conflicts == 0
                    && (0..2).all(|i| {
                        !matches!(
                            (w.decisions[i], w.reserved[i]),
                            (Some(Decision::Posted), Some(PayerStatus::Voided)) | (Some(Decision::Rejected(_)), Some(PayerStatus::Posted))
                        )
                    })
            }),
            Property::always("no money is created or lost on either shard", |_, w: &World| {
                let held: i64 = (0..2).filter(|&i| w.reserved[i] == Some(PayerStatus::Prepared)).map(|i| TRANSFERS[i].amount).sum();
                w.payer_posted + w.clearing_1 == PAYER_START && w.payee_posted + w.clearing_2 == 0 && w.payer_held == held && w.payer_held <= w.payer_posted
            }),
            Property::always("the clearing accounts mirror each other", |_, w: &World| {
                let decided_not_applied: i64 = (0..2)
                    .filter(|&i| w.decisions[i] == Some(Decision::Posted) && w.reserved[i] == Some(PayerStatus::Prepared))
                    .map(|i| TRANSFERS[i].amount)
                    .sum();
                w.clearing_1 + decided_not_applied == -w.clearing_2
            }),
            Property::always("every transfer can still finish", |model: &CrossShard, w: &World| {
                let done = model.finished(w);
                done.network.is_empty()
                    && done.conflicts == 0
                    && done.clearing_1 == -done.clearing_2
                    && (0..2).all(|i| match (done.reserved[i], done.decisions[i]) {
                        (None, None) => true,
                        (Some(PayerStatus::Posted), Some(Decision::Posted)) => true,
                        (Some(PayerStatus::Voided), Some(Decision::Rejected(_))) => true,
                        _ => false,
                    })
            }),
            Property::sometimes("a transfer posts across shards", |_, w: &World| w.reserved.contains(&Some(PayerStatus::Posted))),
            Property::sometimes("a transfer is rejected and voided", |_, w: &World| w.reserved.contains(&Some(PayerStatus::Voided))),
            Property::sometimes("a limit rejects a transfer", |_, w: &World| w.decisions.contains(&Some(Decision::Rejected(Rejection::OverLimit)))),
        ]
    }
}

/// States explored at most (a bound for CI; `CITYPAY_MODEL_STATES` raises it).
fn bound() -> usize {
    std::env::var("CITYPAY_MODEL_STATES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000_000)
}

#[test]
fn the_protocol_holds_under_every_interleaving() {
    let started = std::time::Instant::now();
    let checker = CrossShard { bugs: Bugs::default() }.checker().target_state_count(bound()).spawn_bfs().join();
    checker.assert_properties();
    eprintln!("cross-shard model: {} states ({} unique) in {:.1?}", checker.state_count(), checker.unique_state_count(), started.elapsed());
}

#[test]
fn without_unique_decisions_the_clearing_accounts_drift() {
    let checker = CrossShard { bugs: Bugs { decisions_not_unique: true, ..Bugs::default() } }.checker().target_state_count(bound()).spawn_bfs().join();
    assert!(checker.discovery("the clearing accounts mirror each other").is_some(), "a second decision went unnoticed");
}

#[test]
fn a_payer_that_times_out_on_its_own_voids_a_posted_transfer() {
    let checker = CrossShard { bugs: Bugs { payer_times_out: true, ..Bugs::default() } }.checker().target_state_count(bound()).spawn_bfs().join();
    assert!(checker.discovery("every transfer ends the same way on both shards").is_some(), "a void after a posting went unnoticed");
}
