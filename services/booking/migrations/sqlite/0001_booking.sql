-- SQLite twin of migrations/postgres for `berth dev`. UUIDs are hyphenated
-- TEXT and timestamps fixed-width RFC 3339 TEXT (microseconds, `Z`), so both
-- compare correctly as text.
CREATE TABLE bookings (
    id                  TEXT PRIMARY KEY,
    resource_id         TEXT NOT NULL,
    appointment_type_id TEXT NOT NULL,
    claim_id            TEXT NOT NULL,
    start_at            TEXT NOT NULL,
    end_at              TEXT NOT NULL,
    seats               INTEGER NOT NULL CHECK (seats > 0),
    status              TEXT NOT NULL CHECK (status IN
                            ('held', 'pending_payment', 'confirmed', 'cancelled', 'expired', 'payment_failed')),
    price_minor         INTEGER NOT NULL,
    currency            TEXT NOT NULL,
    customer_name       TEXT,
    customer_email      TEXT,
    hold_expires_at     TEXT,
    saga_step           TEXT,
    saga_attempts       INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     TEXT,
    saga_error          TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    version             INTEGER NOT NULL
);
CREATE INDEX bookings_start_id ON bookings (start_at, id);
CREATE INDEX bookings_resource_start_id ON bookings (resource_id, start_at, id);
CREATE INDEX bookings_saga_due ON bookings (next_attempt_at) WHERE saga_step IS NOT NULL;
CREATE INDEX bookings_open_holds ON bookings (hold_expires_at)
    WHERE status IN ('held', 'pending_payment');

CREATE TABLE idempotency_keys (
    key         TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('in_flight', 'done')),
    status      INTEGER,
    headers     TEXT,
    body        BLOB,
    created_at  TEXT NOT NULL,
    locked_at   TEXT NOT NULL
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

CREATE TABLE outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    booking_id   TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    payload      TEXT NOT NULL,
    occurred_at  TEXT NOT NULL,
    published_at TEXT
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;

CREATE TABLE processed_events (
    consumer     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_at TEXT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
