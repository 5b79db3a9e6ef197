//! The store conformance suite, written once and run against every backend (see each backend's
//! `tests/conformance.rs`), and [`FaultyStore`], a twin of any store that fails commits on
//! demand.

mod faulty;
mod suite;

pub use faulty::{CommitFault, FaultyStore};
pub use suite::{Backend, CASES, Case, TestStore, run_all};

/// Generates one `#[test]` per conformance case; `$backend` builds a fresh [`Backend`].
#[macro_export]
macro_rules! conformance_tests {
    ($backend:expr) => {
        $crate::conformance_tests!(@cases $backend;
            round_trip_restores_the_ledger,
            lookup_answers_for_old_ids,
            a_wide_batch_round_trips,
            audit_is_clean_and_catches_tampering,
            service_rows_commit_with_their_batch,
            failed_commit_writes_nothing,
            second_writer_is_refused,
            batches_must_follow_in_sequence,
            newer_schema_is_refused,
            service_reader_sees_committed_rows);

        #[test]
        fn every_conformance_case_has_a_test() {
            assert_eq!($crate::CASES.len(), 10, "add the new case to conformance_tests!");
        }
    };
    (@cases $backend:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                let mut backend = $backend;
                let case = $crate::CASES.iter().find(|(n, _)| *n == stringify!($name)).expect("case");
                (case.1)(&mut backend);
            }
        )*
    };
}
