//! The bills' tables.

use citypay_store::Migration;

macro_rules! bills_v1 {
    ($bytes:literal) => {
        concat!(
            "CREATE TABLE bills (
                id BIGINT PRIMARY KEY,
                biller_id BIGINT NOT NULL,
                city_code BIGINT NOT NULL,
                category TEXT NOT NULL,
                out_bill_no TEXT NOT NULL,
                payer_kind TEXT NOT NULL,
                payer_key ", $bytes, " NOT NULL,
                payer_masked TEXT NOT NULL,
                title TEXT NOT NULL,
                items TEXT NOT NULL,
                pick_items BIGINT NOT NULL,
                total BIGINT NOT NULL,
                insured BIGINT NOT NULL,
                due_at BIGINT NOT NULL,
                late_allowed BIGINT NOT NULL,
                status TEXT NOT NULL,
                paid_items BIGINT NOT NULL,
                paid_amount BIGINT NOT NULL,
                version BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                UNIQUE (biller_id, out_bill_no)
            );
            CREATE INDEX bills_by_payer ON bills (payer_key, created_at);
            CREATE TABLE bill_payments (
                id BIGINT PRIMARY KEY,
                bill_id BIGINT NOT NULL,
                biller_id BIGINT NOT NULL,
                payer_resident BIGINT,
                method TEXT NOT NULL,
                items BIGINT NOT NULL,
                amount BIGINT NOT NULL,
                insured BIGINT NOT NULL,
                fee BIGINT NOT NULL,
                paid_at BIGINT NOT NULL,
                receipt TEXT NOT NULL,
                signature ", $bytes, " NOT NULL
            );
            CREATE INDEX bill_payments_by_biller ON bill_payments (biller_id, paid_at);
            CREATE INDEX bill_payments_by_payer ON bill_payments (payer_resident, paid_at);
            CREATE TABLE payer_links (
                resident_id BIGINT NOT NULL,
                payer_key ", $bytes, " NOT NULL,
                payer_kind TEXT NOT NULL,
                payer_masked TEXT NOT NULL,
                label TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                PRIMARY KEY (resident_id, payer_key)
            );
            CREATE TABLE contribution_windows (
                city_code BIGINT NOT NULL,
                year BIGINT NOT NULL,
                bureau_id BIGINT NOT NULL,
                amount BIGINT NOT NULL,
                opens_at BIGINT NOT NULL,
                closes_at BIGINT NOT NULL,
                PRIMARY KEY (city_code, year)
            );"
        )
    };
}

/// Consent for links: a link starts `pending` (links made before consent existed too, so they
/// need approval again); a biller lists the guardians of a student or account number.
macro_rules! bills_v3 {
    ($bytes:literal) => {
        concat!(
            "ALTER TABLE payer_links ADD COLUMN status TEXT NOT NULL DEFAULT 'pending';
            CREATE INDEX payer_links_by_payer ON payer_links (payer_key);
            CREATE TABLE payer_guardians (
                payer_key ", $bytes, " NOT NULL,
                guardian_key ", $bytes, " NOT NULL,
                biller_id BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                PRIMARY KEY (payer_key, guardian_key)
            );
            CREATE INDEX payer_guardians_by_guardian ON payer_guardians (guardian_key);"
        )
    };
}

const BILLS_V4: &str = "CREATE TABLE fund_consents (bill_id BIGINT PRIMARY KEY, resident_id BIGINT NOT NULL, created_at BIGINT NOT NULL);
    CREATE TABLE fund_claims (bill_id BIGINT PRIMARY KEY, resident_id BIGINT NOT NULL, amount BIGINT NOT NULL, claimed_at BIGINT NOT NULL);";

/// The bills' migrations, for every backend.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        component: "bills",
        version: 1,
        name: "bills, their payments and receipts, payers' family links, contribution windows",
        sqlite: bills_v1!("BLOB"),
        postgres: bills_v1!("BYTEA"),
    },
    Migration {
        component: "bills",
        version: 2,
        name: "one social-security contribution per person, city and year",
        sqlite: "CREATE TABLE contributions (city_code BIGINT NOT NULL, year BIGINT NOT NULL, person_key BLOB NOT NULL, bill_id BIGINT NOT NULL,
            PRIMARY KEY (city_code, year, person_key));",
        postgres: "CREATE TABLE contributions (city_code BIGINT NOT NULL, year BIGINT NOT NULL, person_key BYTEA NOT NULL, bill_id BIGINT NOT NULL,
            PRIMARY KEY (city_code, year, person_key));",
    },
    Migration {
        component: "bills",
        version: 3,
        name: "payer links need the payer's consent or the biller's confirmation of a guardian",
        sqlite: bills_v3!("BLOB"),
        postgres: bills_v3!("BYTEA"),
    },    Migration {
        component: "bills",
        version: 4,
        name: "patients' consent to the fund's part of a cash bill, and claims of that part after paying all in cash",
        sqlite: BILLS_V4,
        postgres: BILLS_V4,
    },
];
