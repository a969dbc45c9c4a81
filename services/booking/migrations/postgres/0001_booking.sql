-- Booking's own schema; `_sqlx_migrations` lives here too (search_path=booking),
-- so other services migrating the same database never collide with it.
CREATE SCHEMA IF NOT EXISTS booking;

CREATE TABLE booking.bookings (
    id                  UUID PRIMARY KEY,
    resource_id         UUID NOT NULL,
    appointment_type_id UUID NOT NULL,
    claim_id            UUID NOT NULL,
    start_at            TIMESTAMPTZ NOT NULL,
    end_at              TIMESTAMPTZ NOT NULL,
    seats               INTEGER NOT NULL CHECK (seats > 0),
    status              TEXT NOT NULL CHECK (status IN
                            ('held', 'pending_payment', 'confirmed', 'cancelled', 'expired', 'payment_failed')),
    price_minor         BIGINT NOT NULL,
    currency            TEXT NOT NULL,
    customer_name       TEXT,
    customer_email      TEXT,
    hold_expires_at     TIMESTAMPTZ,
    -- Saga: a pending compensation (e.g. 'release_claim') and when to retry it.
    saga_step           TEXT,
    saga_attempts       INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     TIMESTAMPTZ,
    saga_error          TEXT,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    version             BIGINT NOT NULL
);
CREATE INDEX bookings_start_id ON booking.bookings (start_at, id);
CREATE INDEX bookings_resource_start_id ON booking.bookings (resource_id, start_at, id);
CREATE INDEX bookings_saga_due ON booking.bookings (next_attempt_at) WHERE saga_step IS NOT NULL;
CREATE INDEX bookings_open_holds ON booking.bookings (hold_expires_at)
    WHERE status IN ('held', 'pending_payment');

CREATE TABLE booking.idempotency_keys (
    key         TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('in_flight', 'done')),
    status      INTEGER,
    headers     TEXT,
    body        BYTEA,
    created_at  TIMESTAMPTZ NOT NULL,
    locked_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX idempotency_keys_created ON booking.idempotency_keys (created_at);

CREATE TABLE booking.outbox (
    seq          BIGSERIAL PRIMARY KEY,
    id           UUID NOT NULL UNIQUE,
    booking_id   UUID NOT NULL,
    event_type   TEXT NOT NULL,
    payload      JSONB NOT NULL,
    occurred_at  TIMESTAMPTZ NOT NULL,
    published_at TIMESTAMPTZ
);
CREATE INDEX outbox_unpublished ON booking.outbox (seq) WHERE published_at IS NULL;

CREATE TABLE booking.processed_events (
    consumer     TEXT NOT NULL,
    event_id     UUID NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
