//! Transit's tables.

use citypay_store::Migration;

macro_rules! transit_v1 {
    ($bytes:literal) => {
        concat!(
            "CREATE TABLE ride_accounts (
                account_ref BIGINT PRIMARY KEY,
                resident_id BIGINT NOT NULL UNIQUE,
                created_at BIGINT NOT NULL
            );
            CREATE TABLE validators (
                id BIGINT PRIMARY KEY,
                operator_id BIGINT NOT NULL,
                route_id TEXT NOT NULL,
                stop_id TEXT NOT NULL,
                device_key ", $bytes, " NOT NULL,
                created_at BIGINT NOT NULL
            );
            CREATE TABLE taps (
                validator_id BIGINT NOT NULL,
                sequence BIGINT NOT NULL,
                account_ref BIGINT NOT NULL,
                route_id TEXT NOT NULL,
                stop_id TEXT NOT NULL,
                direction TEXT NOT NULL,
                at BIGINT NOT NULL,
                service_day BIGINT NOT NULL,
                code_hash ", $bytes, " NOT NULL,
                flagged BIGINT NOT NULL,
                uploaded_at BIGINT NOT NULL,
                PRIMARY KEY (validator_id, sequence)
            );
            CREATE INDEX taps_by_day ON taps (service_day, account_ref);
            CREATE TABLE transit_charges (
                account_ref BIGINT NOT NULL,
                service_day BIGINT NOT NULL,
                operator_id BIGINT NOT NULL,
                trips BIGINT NOT NULL,
                due BIGINT NOT NULL,
                charged BIGINT NOT NULL,
                revision BIGINT NOT NULL,
                updated_at BIGINT NOT NULL,
                PRIMARY KEY (account_ref, service_day)
            );
            CREATE TABLE arrears (
                account_ref BIGINT NOT NULL,
                service_day BIGINT NOT NULL,
                operator_id BIGINT NOT NULL,
                amount BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                paid_at BIGINT,
                PRIMARY KEY (account_ref, service_day)
            );"
        )
    };
}

/// Each operator's part of a rider's day; days fared before it were wholly the first
/// operator's, so they become one part each.
const TRANSIT_V2: &str = "CREATE TABLE transit_shares (
        account_ref BIGINT NOT NULL,
        service_day BIGINT NOT NULL,
        operator_id BIGINT NOT NULL,
        legs BIGINT NOT NULL,
        due BIGINT NOT NULL,
        charged BIGINT NOT NULL,
        PRIMARY KEY (account_ref, service_day, operator_id)
    );
    CREATE INDEX transit_shares_by_operator ON transit_shares (operator_id, service_day);
    INSERT INTO transit_shares (account_ref, service_day, operator_id, legs, due, charged)
        SELECT account_ref, service_day, operator_id, trips, due, charged FROM transit_charges;";

/// Validators found by device key: registering one checks that its key names no other
/// validator (the writer's guard; not a unique index, which a database holding two
/// validators with one key from before would refuse to build).
const TRANSIT_V3: &str = "CREATE INDEX validators_by_device_key ON validators (device_key);";

/// The city's ride-key schedule, public halves only: every server reads it and signs with the
/// newest key valid now, whose secret half it derives from the city's one key set.
macro_rules! transit_v4 {
    ($blob:literal) => {
        concat!(
            "CREATE TABLE ride_keys (
                key_id BIGINT PRIMARY KEY,
                public_key ", $blob, " NOT NULL,
                not_before BIGINT NOT NULL,
                not_after BIGINT NOT NULL,
                revoked BIGINT NOT NULL
            );"
        )
    };
}

/// Transit's migrations, for every backend.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        component: "transit",
        version: 1,
        name: "ride accounts, validators, taps, charges per rider and service day, arrears",
        sqlite: transit_v1!("BLOB"),
        postgres: transit_v1!("BYTEA"),
    },
    Migration { component: "transit", version: 2, name: "each operator's part of a rider's day", sqlite: TRANSIT_V2, postgres: TRANSIT_V2 },
    Migration { component: "transit", version: 3, name: "validators by device key", sqlite: TRANSIT_V3, postgres: TRANSIT_V3 },
    Migration { component: "transit", version: 4, name: "the city's ride-key schedule", sqlite: transit_v4!("BLOB"), postgres: transit_v4!("BYTEA") },
];
