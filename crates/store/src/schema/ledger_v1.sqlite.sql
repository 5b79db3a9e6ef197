CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    currency TEXT NOT NULL,
    flags INTEGER NOT NULL,
    code INTEGER NOT NULL,
    opened_at INTEGER NOT NULL,
    debits_posted INTEGER NOT NULL,
    debits_pending INTEGER NOT NULL,
    credits_posted INTEGER NOT NULL,
    credits_pending INTEGER NOT NULL,
    transfer_cap_classes INTEGER,
    transfer_cap_max INTEGER,
    cap1_window INTEGER, cap1_classes INTEGER, cap1_max INTEGER,
    cap1_key INTEGER NOT NULL, cap1_used INTEGER NOT NULL,
    cap2_window INTEGER, cap2_classes INTEGER, cap2_max INTEGER,
    cap2_key INTEGER NOT NULL, cap2_used INTEGER NOT NULL,
    cap3_window INTEGER, cap3_classes INTEGER, cap3_max INTEGER,
    cap3_key INTEGER NOT NULL, cap3_used INTEGER NOT NULL
);
-- The journal. The idempotency record of a successful event is its leg-0 row (hash column).
CREATE TABLE transfers (
    id BLOB NOT NULL,
    leg INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    debit_account INTEGER NOT NULL,
    credit_account INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    code INTEGER NOT NULL,
    class INTEGER NOT NULL,
    user_data INTEGER NOT NULL,
    pending_id BLOB,
    deadline INTEGER,
    state INTEGER,
    timestamp INTEGER NOT NULL,
    batch INTEGER NOT NULL,
    hash INTEGER NOT NULL,
    PRIMARY KEY (id, leg)
) WITHOUT ROWID;
CREATE INDEX transfers_open_pending ON transfers (id) WHERE kind = 1 AND state = 1;
-- Rejected events, so a retry gets the first answer.
CREATE TABLE rejections (
    id BLOB PRIMARY KEY,
    hash INTEGER NOT NULL,
    status INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    batch INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE ledger_meta (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    last_batch INTEGER NOT NULL,
    last_timestamp INTEGER NOT NULL
);
INSERT INTO ledger_meta VALUES (1, 0, 0);
