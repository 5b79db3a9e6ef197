//! The checkout's tables.

use citypay_store::Migration;

macro_rules! checkout_v1 {
    ($bytes:literal) => {
        concat!(
            "CREATE TABLE trades (
                id BIGINT PRIMARY KEY,
                merchant_id BIGINT NOT NULL,
                city_code BIGINT NOT NULL,
                out_trade_no TEXT NOT NULL,
                amount BIGINT NOT NULL,
                subject TEXT NOT NULL,
                status TEXT NOT NULL,
                method TEXT NOT NULL,
                payer_resident BIGINT,
                refunded BIGINT NOT NULL,
                version BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                paid_at BIGINT,
                UNIQUE (merchant_id, out_trade_no)
            );
            CREATE TABLE refunds (
                trade_id BIGINT NOT NULL,
                out_request_no TEXT NOT NULL,
                amount BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                PRIMARY KEY (trade_id, out_request_no)
            );
            CREATE TABLE payment_devices (
                id BIGINT PRIMARY KEY,
                resident_id BIGINT NOT NULL,
                secret_sealed ", $bytes, " NOT NULL,
                last_step BIGINT NOT NULL,
                failures BIGINT NOT NULL,
                created_at BIGINT NOT NULL
            );
            CREATE TABLE outbox (
                id ", $bytes, " PRIMARY KEY,
                merchant_id BIGINT NOT NULL,
                trade_id BIGINT NOT NULL,
                kind TEXT NOT NULL,
                body TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                attempts BIGINT NOT NULL,
                next_attempt_at BIGINT NOT NULL,
                delivered_at BIGINT
            );"
        )
    };
}

macro_rules! checkout_v7 {
    () => {
        "CREATE TABLE refund_periods (merchant_id BIGINT PRIMARY KEY, period_s BIGINT NOT NULL, updated_at BIGINT NOT NULL);
        ALTER TABLE trades ADD COLUMN finishes_at BIGINT;
        UPDATE trades SET finishes_at = paid_at + 7776000 WHERE paid_at IS NOT NULL;
        CREATE INDEX trades_finishing ON trades (finishes_at) WHERE status = 'TRADE_SUCCESS';
        ALTER TABLE refunds ADD COLUMN status TEXT NOT NULL DEFAULT 'REFUND_SUCCESS';"
    };
}

/// The checkout's migrations, for every backend.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        component: "checkout",
        version: 1,
        name: "trades, refunds, payment devices, outbox",
        sqlite: checkout_v1!("BLOB"),
        postgres: checkout_v1!("BYTEA"),
    },
    Migration {
        component: "checkout",
        version: 2,
        name: "a merchant's trades, newest first",
        sqlite: "CREATE INDEX trades_by_merchant ON trades (merchant_id, created_at, id);",
        postgres: "CREATE INDEX trades_by_merchant ON trades (merchant_id, created_at, id);",
    },
    // The sweeper and the dispatcher run every second: without these they scan every trade
    // and every event ever made. Partial, so paid trades and delivered events cost nothing.
    Migration {
        component: "checkout",
        version: 3,
        name: "waiting trades by expiry, undelivered events by due time",
        sqlite: "CREATE INDEX trades_waiting ON trades (expires_at) WHERE status = 'WAIT_BUYER_PAY';
            CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL;",
        postgres: "CREATE INDEX trades_waiting ON trades (expires_at) WHERE status = 'WAIT_BUYER_PAY';
            CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL;",
    },
    Migration {
        component: "checkout",
        version: 4,
        name: "the fee charged on each trade",
        sqlite: "ALTER TABLE trades ADD COLUMN fee BIGINT NOT NULL DEFAULT 0;",
        postgres: "ALTER TABLE trades ADD COLUMN fee BIGINT NOT NULL DEFAULT 0;",
    },
    Migration {
        component: "checkout",
        version: 5,
        name: "wrong payment codes per merchant and minute, shared by every API server",
        sqlite: "CREATE TABLE code_failures (merchant_id BIGINT NOT NULL, minute BIGINT NOT NULL, failures BIGINT NOT NULL,
            PRIMARY KEY (merchant_id, minute));",
        postgres: "CREATE TABLE code_failures (merchant_id BIGINT NOT NULL, minute BIGINT NOT NULL, failures BIGINT NOT NULL,
            PRIMARY KEY (merchant_id, minute));",
    },
    Migration {
        component: "checkout",
        version: 6,
        name: "revoked payment devices; wrong codes per device and hour, and per device, merchant and hour",
        sqlite: CHECKOUT_V6,
        postgres: CHECKOUT_V6,
    },
    // Each trade keeps the end of the refund period it was paid under; trades paid before
    // there were periods get Alipay's default, 90 days from payment. Each refund is a record
    // of its own (its status beside the amount and time it already had).
    Migration {
        component: "checkout",
        version: 7,
        name: "refund periods per merchant, the end of each trade's, refund records' status",
        sqlite: checkout_v7!(),
        postgres: checkout_v7!(),
    },
    // A trade made through the Alipay-compatible gateway notifies the app's URL in Alipay's form.
    Migration {
        component: "checkout",
        version: 8,
        name: "gateway trades' notification target",
        sqlite: "ALTER TABLE trades ADD COLUMN notify_app BIGINT; ALTER TABLE trades ADD COLUMN notify_url TEXT;",
        postgres: "ALTER TABLE trades ADD COLUMN notify_app BIGINT; ALTER TABLE trades ADD COLUMN notify_url TEXT;",
    },
    // The trade a device's last code was spent on, so that a till retrying that order with
    // that code is answered as the first time (a refusal too) instead of "code used".
    Migration {
        component: "checkout",
        version: 9,
        name: "the order and trade each device's last code was spent on",
        sqlite: "ALTER TABLE payment_devices ADD COLUMN last_trade BIGINT; ALTER TABLE payment_devices ADD COLUMN last_order TEXT;",
        postgres: "ALTER TABLE payment_devices ADD COLUMN last_trade BIGINT; ALTER TABLE payment_devices ADD COLUMN last_order TEXT;",
    },
    // Every till action names the cashier who did it; a cashier lists their shift's trades.
    Migration {
        component: "checkout",
        version: 10,
        name: "the cashier of each trade and refund made at the till",
        sqlite: CHECKOUT_V10,
        postgres: CHECKOUT_V10,
    },
    // A refund to a wallet of another shard is held first (`REFUND_PROCESSING`), with the part
    // of the fee it gives back when it succeeds.
    Migration {
        component: "checkout",
        version: 11,
        name: "the fee a refund gives back, kept while it crosses shards",
        sqlite: "ALTER TABLE refunds ADD COLUMN fee_back BIGINT NOT NULL DEFAULT 0;",
        postgres: "ALTER TABLE refunds ADD COLUMN fee_back BIGINT NOT NULL DEFAULT 0; CREATE INDEX refunds_processing ON refunds (status) WHERE status = 'REFUND_PROCESSING';",
    },
    // The resolver's round looks for refunds still crossing every second: on SQLite too,
    // without reading the whole table.
    Migration {
        component: "checkout",
        version: 12,
        name: "refunds still crossing shards, indexed on SQLite too",
        sqlite: "CREATE INDEX IF NOT EXISTS refunds_processing ON refunds (status) WHERE status = 'REFUND_PROCESSING';",
        postgres: "CREATE INDEX IF NOT EXISTS refunds_processing ON refunds (status) WHERE status = 'REFUND_PROCESSING';",
    },
    // A refund returned by another shard gives back the fee it held: later refunds must know
    // what was given, not work it out from the amount refunded. What each trade gave back is
    // read from the ledger (its `fee_returned` legs carry the trade's id), with what refunds
    // still crossing hold.
    Migration {
        component: "checkout",
        version: 13,
        name: "the part of the fee each trade gave back",
        sqlite: CHECKOUT_V13,
        postgres: CHECKOUT_V13,
    },
];

const CHECKOUT_V13: &str = "ALTER TABLE trades ADD COLUMN fee_returned BIGINT NOT NULL DEFAULT 0;
    UPDATE trades SET fee_returned = given.amount
        FROM (SELECT user_data, SUM(amount) AS amount FROM transfers WHERE code = 23 GROUP BY user_data) AS given
        WHERE given.user_data = trades.id;
    UPDATE trades SET fee_returned = fee_returned + held.amount
        FROM (SELECT trade_id, SUM(fee_back) AS amount FROM refunds WHERE status = 'REFUND_PROCESSING' GROUP BY trade_id) AS held
        WHERE held.trade_id = trades.id;";

const CHECKOUT_V10: &str = "ALTER TABLE trades ADD COLUMN cashier BIGINT;
    ALTER TABLE refunds ADD COLUMN cashier BIGINT;
    CREATE INDEX trades_by_cashier ON trades (cashier, created_at, id) WHERE cashier IS NOT NULL;";

/// A device's `failures` now count its wrong codes in the hour `failures_hour` (a cool-down,
/// never a lock); `device_code_failures` counts them per merchant too.
const CHECKOUT_V6: &str = "ALTER TABLE payment_devices ADD COLUMN revoked_at BIGINT;
    ALTER TABLE payment_devices ADD COLUMN failures_hour BIGINT NOT NULL DEFAULT 0;
    UPDATE payment_devices SET failures = 0;
    CREATE INDEX payment_devices_by_resident ON payment_devices (resident_id);
    CREATE TABLE device_code_failures (device_id BIGINT NOT NULL, merchant_id BIGINT NOT NULL, hour BIGINT NOT NULL,
        failures BIGINT NOT NULL, PRIMARY KEY (device_id, merchant_id, hour));";

#[cfg(test)]
mod tests {
    #[test]
    fn migration_13_reads_the_fee_returned_code() {
        assert_eq!(citypay_directory::transfer_codes::FEE_RETURNED, 23, "CHECKOUT_V13 names the code by number");
    }
}
