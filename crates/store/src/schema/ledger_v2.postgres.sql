-- The writer lease runs out unless renewed (on the database's clock), and names where the
-- writer takes commands from the other servers of the city.
ALTER TABLE writer_lease
    ADD COLUMN expires_at TIMESTAMPTZ,
    ADD COLUMN address TEXT NOT NULL DEFAULT '';
