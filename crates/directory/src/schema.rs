//! The directory's tables.

use citypay_store::Migration;

macro_rules! directory_v1 {
    ($bytes:literal) => {
        concat!(
            "CREATE TABLE cities (code BIGINT PRIMARY KEY, name TEXT NOT NULL, created_at BIGINT NOT NULL);
            CREATE TABLE residents (
                id BIGINT PRIMARY KEY,
                city_code BIGINT NOT NULL,
                identity_index ", $bytes, " NOT NULL UNIQUE,
                mobile_index ", $bytes, " NOT NULL UNIQUE,
                id_number_sealed ", $bytes, " NOT NULL,
                name_sealed ", $bytes, " NOT NULL,
                mobile_sealed ", $bytes, " NOT NULL,
                id_masked TEXT NOT NULL,
                account_class TEXT NOT NULL,
                wallet_account BIGINT NOT NULL,
                password_hash TEXT NOT NULL,
                created_at BIGINT NOT NULL
            );
            CREATE TABLE merchants (
                id BIGINT PRIMARY KEY,
                city_code BIGINT NOT NULL,
                name TEXT NOT NULL,
                uscc TEXT NOT NULL UNIQUE,
                mcc TEXT NOT NULL,
                category TEXT NOT NULL,
                settlement_account_sealed ", $bytes, " NOT NULL,
                settlement_account_masked TEXT NOT NULL,
                account BIGINT NOT NULL,
                notify_url TEXT,
                created_at BIGINT NOT NULL
            );
            CREATE TABLE api_keys (
                key_id TEXT PRIMARY KEY,
                merchant_id BIGINT NOT NULL,
                secret_hash ", $bytes, " NOT NULL,
                created_at BIGINT NOT NULL,
                revoked_at BIGINT
            );
            CREATE INDEX api_keys_merchant ON api_keys (merchant_id);
            CREATE TABLE operators (
                id BIGINT PRIMARY KEY,
                username TEXT NOT NULL UNIQUE,
                role TEXT NOT NULL,
                city_code BIGINT,
                password_hash TEXT NOT NULL,
                created_at BIGINT NOT NULL
            );
            CREATE TABLE platform_accounts (name TEXT PRIMARY KEY, account BIGINT NOT NULL);"
        )
    };
}

// A session is the record behind a bearer token: ending it ends the token. Failed sign-ins
// are counted per subject (an account, a known client, a client address; each a blind index)
// and window, so every API server sees the same counts.
macro_rules! directory_v4 {
    ($bytes:literal) => {
        concat!(
            "CREATE TABLE sessions (
                id TEXT PRIMARY KEY,
                principal TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                ended_at BIGINT
            );
            CREATE INDEX sessions_by_principal ON sessions (principal, expires_at);
            CREATE TABLE sign_in_failures (
                subject ", $bytes, " NOT NULL,
                window_start BIGINT NOT NULL,
                failures BIGINT NOT NULL,
                PRIMARY KEY (subject, window_start)
            );
            ALTER TABLE residents ADD COLUMN wallet_frozen BIGINT NOT NULL DEFAULT 0;"
        )
    };
}

/// The directory's migrations, for every backend.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        component: "directory",
        version: 1,
        name: "cities, residents, merchants, api keys, operators, platform accounts",
        sqlite: directory_v1!("BLOB"),
        postgres: directory_v1!("BYTEA"),
    },
    Migration {
        component: "directory",
        version: 2,
        name: "merchants' webhook signing secret",
        sqlite: "ALTER TABLE merchants ADD COLUMN webhook_secret_sealed BLOB;",
        postgres: "ALTER TABLE merchants ADD COLUMN webhook_secret_sealed BYTEA;",
    },
    Migration {
        component: "directory",
        version: 3,
        name: "fee rates per merchant category",
        sqlite: FEE_RATES_V3,
        postgres: FEE_RATES_V3,
    },
    Migration {
        component: "directory",
        version: 4,
        name: "sessions, failed sign-ins per window, frozen wallets",
        sqlite: directory_v4!("BLOB"),
        postgres: directory_v4!("BYTEA"),
    },
    Migration {
        component: "directory",
        version: 5,
        name: "how each resident's identity was verified",
        sqlite: VERIFICATIONS_V5,
        postgres: VERIFICATIONS_V5,
    },
    Migration {
        component: "directory",
        version: 6,
        name: "merchants' apps on the Alipay-compatible gateway",
        sqlite: GATEWAY_APPS_V6,
        postgres: GATEWAY_APPS_V6,
    },
    Migration {
        component: "directory",
        version: 7,
        name: "merchants' cashiers",
        sqlite: CASHIERS_V7,
        postgres: CASHIERS_V7,
    },
    Migration {
        component: "directory",
        version: 8,
        name: "each city's group of buckets",
        sqlite: BUCKET_GROUPS_V8,
        postgres: BUCKET_GROUPS_V8,
    },
];

/// The buckets each city's residents and merchants get (`citypay-routing`): a group of 4 per
/// city, past the 4 legacy buckets, given in the order of the cities' codes to the cities of
/// a database from before buckets, and in the order they are onboarded after.
const BUCKET_GROUPS_V8: &str = "CREATE TABLE bucket_groups (first_bucket BIGINT PRIMARY KEY, city BIGINT NOT NULL, buckets BIGINT NOT NULL);
    CREATE INDEX bucket_groups_by_city ON bucket_groups (city);
    INSERT INTO bucket_groups (first_bucket, city, buckets)
        SELECT 4 + 4 * (SELECT COUNT(*) FROM cities c2 WHERE c2.code < c1.code), c1.code, 4 FROM cities c1;";

/// A merchant's till credentials: the 8-digit cashier number, role, refund limit (fen) and
/// password hash; a disabled one keeps its row (its trades and refunds name it).
const CASHIERS_V7: &str = "CREATE TABLE cashiers (
        id BIGINT PRIMARY KEY,
        merchant_id BIGINT NOT NULL,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        refund_limit BIGINT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        disabled_at BIGINT
    );
    CREATE INDEX cashiers_by_merchant ON cashiers (merchant_id);";

/// A merchant's gateway apps: the 16-digit app id, its RSA public key (SubjectPublicKeyInfo,
/// base64), its default notification URL and the platform key that signs for it.
const GATEWAY_APPS_V6: &str = "CREATE TABLE gateway_apps (
        app_id BIGINT PRIMARY KEY,
        merchant_id BIGINT NOT NULL,
        public_key TEXT NOT NULL,
        notify_url TEXT,
        platform_key BIGINT NOT NULL,
        disabled_at BIGINT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX gateway_apps_by_merchant ON gateway_apps (merchant_id);
    CREATE INDEX gateway_apps_by_platform_key ON gateway_apps (platform_key);";

/// A resident's verifications: one row per channel and reference (the issuing bank that
/// confirmed a card, the operator who checked the ID card in person). The account class is
/// computed from them.
const VERIFICATIONS_V5: &str = "CREATE TABLE resident_verifications (
        resident_id BIGINT NOT NULL,
        channel TEXT NOT NULL,
        reference TEXT NOT NULL,
        verified_at BIGINT NOT NULL,
        PRIMARY KEY (resident_id, channel, reference)
    );";

/// Card acquiring's usual 0.6% for shops and restaurants; public services are fee-free.
const FEE_RATES_V3: &str = "CREATE TABLE fee_rates (category TEXT PRIMARY KEY, rate_bp BIGINT NOT NULL, updated_at BIGINT NOT NULL);
    INSERT INTO fee_rates (category, rate_bp, updated_at) VALUES
        ('retail', 60, 0), ('restaurant', 60, 0), ('other', 60, 0), ('transit', 0, 0),
        ('hospital', 0, 0), ('school', 0, 0), ('social_security', 0, 0), ('utility', 0, 0);";
