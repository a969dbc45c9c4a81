-- SQLite twin of migrations/postgres/0002_authorisation.sql.
ALTER TABLE bookings ADD COLUMN customer_id TEXT;
ALTER TABLE bookings ADD COLUMN resource_owner_id TEXT;
CREATE INDEX bookings_customer_start_id ON bookings (customer_id, start_at, id);
CREATE INDEX bookings_owner_start_id ON bookings (resource_owner_id, start_at, id);

-- SQLite cannot change a primary key in place: rebuild the table.
CREATE TABLE idempotency_keys_new (
    subject     TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('in_flight', 'done')),
    status      INTEGER,
    headers     TEXT,
    body        BLOB,
    created_at  TEXT NOT NULL,
    locked_at   TEXT NOT NULL,
    PRIMARY KEY (subject, key)
);
INSERT INTO idempotency_keys_new
    (subject, key, fingerprint, state, status, headers, body, created_at, locked_at)
    SELECT '', key, fingerprint, state, status, headers, body, created_at, locked_at
    FROM idempotency_keys;
DROP TABLE idempotency_keys;
ALTER TABLE idempotency_keys_new RENAME TO idempotency_keys;
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
