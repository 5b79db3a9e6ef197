CREATE TABLE accounts (
    id BIGINT PRIMARY KEY,
    currency TEXT NOT NULL,
    flags BIGINT NOT NULL,
    code BIGINT NOT NULL,
    opened_at BIGINT NOT NULL,
    debits_posted BIGINT NOT NULL,
    debits_pending BIGINT NOT NULL,
    credits_posted BIGINT NOT NULL,
    credits_pending BIGINT NOT NULL,
    transfer_cap_classes BIGINT,
    transfer_cap_max BIGINT,
    cap1_window BIGINT, cap1_classes BIGINT, cap1_max BIGINT,
    cap1_key BIGINT NOT NULL, cap1_used BIGINT NOT NULL,
    cap2_window BIGINT, cap2_classes BIGINT, cap2_max BIGINT,
    cap2_key BIGINT NOT NULL, cap2_used BIGINT NOT NULL,
    cap3_window BIGINT, cap3_classes BIGINT, cap3_max BIGINT,
    cap3_key BIGINT NOT NULL, cap3_used BIGINT NOT NULL
);
-- The journal. The idempotency record of a successful event is its leg-0 row (hash column).
CREATE TABLE transfers (
    id BYTEA NOT NULL,
    leg BIGINT NOT NULL,
    kind BIGINT NOT NULL,
    debit_account BIGINT NOT NULL,
    credit_account BIGINT NOT NULL,
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    code BIGINT NOT NULL,
    class BIGINT NOT NULL,
    user_data BIGINT NOT NULL,
    pending_id BYTEA,
    deadline BIGINT,
    state BIGINT,
    timestamp BIGINT NOT NULL,
    batch BIGINT NOT NULL,
    hash BIGINT NOT NULL,
    PRIMARY KEY (id, leg)
);
CREATE INDEX transfers_open_pending ON transfers (id) WHERE kind = 1 AND state = 1;
-- Rejected events, so a retry gets the first answer.
CREATE TABLE rejections (
    id BYTEA PRIMARY KEY,
    hash BIGINT NOT NULL,
    status BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    batch BIGINT NOT NULL
);
CREATE TABLE ledger_meta (
    singleton BIGINT PRIMARY KEY CHECK (singleton = 1),
    last_batch BIGINT NOT NULL,
    last_timestamp BIGINT NOT NULL
);
INSERT INTO ledger_meta VALUES (1, 0, 0);
-- The writer lease: one writer at a time, each with a larger epoch that every commit checks.
CREATE TABLE writer_lease (
    singleton BIGINT PRIMARY KEY CHECK (singleton = 1),
    epoch BIGINT NOT NULL,
    holder TEXT NOT NULL
);
INSERT INTO writer_lease VALUES (1, 0, '');
