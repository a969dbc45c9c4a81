-- The payment service's tables, the same on PostgreSQL (schema `payment`,
-- reached through search_path) and SQLite (`berth dev`). Ids are text and
-- times are Unix microseconds (BIGINT), so one set of queries serves both.

-- One row per booking: the payment and its saga's state. The money rules
-- are constraints, so no code path can write a row that breaks them.
CREATE TABLE payments (
    id                        TEXT PRIMARY KEY,
    booking_id                TEXT NOT NULL UNIQUE,
    customer_id               TEXT,
    resource_owner_id         TEXT,
    amount_minor              BIGINT NOT NULL CHECK (amount_minor > 0),
    currency                  TEXT NOT NULL,
    intent_id                 TEXT UNIQUE,
    client_secret             TEXT,
    create_attempt            INTEGER NOT NULL DEFAULT 0,
    state                     TEXT NOT NULL CHECK (state IN ('creating', 'awaiting_payment',
                                  'securing', 'capturing', 'confirming', 'paid', 'voiding',
                                  'refunding', 'failing_booking', 'failed', 'refunded')),
    failure                   TEXT,
    captured_minor            BIGINT NOT NULL DEFAULT 0
                                  CHECK (captured_minor BETWEEN 0 AND amount_minor),
    refunded_minor            BIGINT NOT NULL DEFAULT 0
                                  CHECK (refunded_minor BETWEEN 0 AND captured_minor),
    refund_due_minor          BIGINT NOT NULL DEFAULT 0 CHECK (refund_due_minor >= 0),
    refund_seq                INTEGER NOT NULL DEFAULT 0,
    cancellation_refund_minor BIGINT,
    step_due_us               BIGINT,
    attempts                  INTEGER NOT NULL DEFAULT 0,
    last_error                TEXT,
    drift                     TEXT,
    created_us                BIGINT NOT NULL,
    updated_us                BIGINT NOT NULL,
    version                   BIGINT NOT NULL,
    -- Paid means all of the price captured and none given back.
    CHECK (state <> 'paid' OR (captured_minor = amount_minor AND refunded_minor = 0)),
    -- Failed means every captured cent given back.
    CHECK (state <> 'failed' OR refunded_minor = captured_minor),
    -- Nothing is captured before an intent exists.
    CHECK (intent_id IS NOT NULL OR captured_minor = 0)
);
CREATE INDEX payments_due ON payments (step_due_us) WHERE step_due_us IS NOT NULL;
CREATE INDEX payments_state ON payments (state, updated_us);

-- Every change of a payment's state, in order (its saga's history).
CREATE TABLE payment_steps (
    payment_id TEXT NOT NULL,
    version    BIGINT NOT NULL,
    at_us      BIGINT NOT NULL,
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    note       TEXT NOT NULL,
    PRIMARY KEY (payment_id, version)
);

-- The webhook inbox: every Stripe event once, stored before it is answered.
CREATE TABLE stripe_events (
    id           TEXT PRIMARY KEY,
    event_type   TEXT NOT NULL,
    object_id    TEXT,
    payload      TEXT NOT NULL,
    received_us  BIGINT NOT NULL,
    processed_us BIGINT
);
CREATE INDEX stripe_events_unprocessed ON stripe_events (received_us)
    WHERE processed_us IS NULL;

-- Staff refunds by Idempotency-Key: one refund per key.
CREATE TABLE refund_requests (
    payment_id      TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    requested_by    TEXT NOT NULL,
    -- As asked for; NULL: everything still kept.
    amount_minor    BIGINT CHECK (amount_minor > 0),
    created_us      BIGINT NOT NULL,
    PRIMARY KEY (payment_id, idempotency_key)
);

-- Transactional outbox of payment events, relayed to the Redis stream.
CREATE TABLE outbox (
    id           TEXT PRIMARY KEY,
    payment_id   TEXT NOT NULL,
    booking_id   TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_us   BIGINT NOT NULL,
    published_us BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (created_us, id) WHERE published_us IS NULL;

-- Booking events this service handled (idempotent consumption).
CREATE TABLE processed_events (
    consumer     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_us BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
