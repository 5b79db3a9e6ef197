//! Settlement's tables, and the journal index it reads by time.

use citypay_store::Migration;

const SETTLEMENT_V1: &str = "CREATE TABLE payouts (
        merchant_id BIGINT NOT NULL,
        day BIGINT NOT NULL,
        amount BIGINT NOT NULL,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        bank_reference TEXT,
        error TEXT,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (merchant_id, day)
    );
    CREATE INDEX payouts_by_day ON payouts (day);
    CREATE INDEX transfers_by_time ON transfers (timestamp);";

/// Settlement's migrations, for every backend. The journal index grows at its right edge only
/// (timestamps rise), so the writer pays little for it; settlement reads a day's movements
/// from it without touching the journal's rows.
pub const MIGRATIONS: &[citypay_store::Migration] = &[Migration {
    component: "settlement",
    version: 1,
    name: "payouts; the journal by time",
    sqlite: SETTLEMENT_V1,
    postgres: SETTLEMENT_V1,
}];
