-- Each account's journal lines in time order, for statements: a wallet's lines are found by
-- the side it is on.
CREATE INDEX transfers_by_debit ON transfers (debit_account, timestamp);
CREATE INDEX transfers_by_credit ON transfers (credit_account, timestamp);
