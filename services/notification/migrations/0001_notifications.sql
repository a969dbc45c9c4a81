-- The notification service's tables, the same on PostgreSQL (schema
-- `notification`, reached through search_path) and SQLite (`berth dev`).
-- Ids are text and times are Unix microseconds (BIGINT), so one set of
-- queries serves both.

-- Events handled, recorded in the same transaction as the deliveries they
-- create: an event delivered again (or to two replicas) creates nothing.
CREATE TABLE processed_events (
    consumer     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_us BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

-- What this service last learnt of each booking (from its events): who to
-- tell, and whether they hold an invite. A late event (lower version)
-- changes nothing and sends nothing.
CREATE TABLE bookings (
    booking_id          TEXT PRIMARY KEY,
    version             BIGINT NOT NULL CHECK (version >= 0),
    status              TEXT NOT NULL,
    resource_id         TEXT NOT NULL,
    appointment_type_id TEXT NOT NULL,
    start_us            BIGINT NOT NULL,
    end_us              BIGINT NOT NULL CHECK (end_us >= start_us),
    price_minor         BIGINT NOT NULL,
    currency            TEXT NOT NULL,
    customer_name       TEXT,
    customer_email      TEXT,
    -- SEQUENCE of the last invite sent; NULL: the customer holds none, so
    -- there is nothing to update or cancel.
    invite_sequence     BIGINT,
    updated_us          BIGINT NOT NULL
);

-- One row per message to send: the durable intent, then its outcome.
CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY,
    event_id        TEXT NOT NULL,
    booking_id      TEXT,
    kind            TEXT NOT NULL CHECK (kind IN ('confirmation', 'reschedule',
                        'cancellation', 'refund', 'payment_failed')),
    channel         TEXT NOT NULL CHECK (channel IN ('email', 'sms', 'webhook')),
    recipient       TEXT NOT NULL,
    booking_version BIGINT,
    subject         TEXT NOT NULL,
    body            TEXT NOT NULL,
    html            TEXT,
    invite_method   TEXT CHECK (invite_method IN ('REQUEST', 'CANCEL')),
    ics             TEXT,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'superseded')),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When it is tried next; while a sender holds it, when its lease lapses.
    due_us          BIGINT,
    last_error      TEXT,
    created_us      BIGINT NOT NULL,
    updated_us      BIGINT NOT NULL,
    sent_us         BIGINT,
    UNIQUE (event_id, channel, recipient),
    -- Only a pending message is ever due; an ended one never is.
    CHECK ((status = 'pending') = (due_us IS NOT NULL)),
    CHECK ((status = 'sent') = (sent_us IS NOT NULL)),
    CHECK ((invite_method IS NULL) = (ics IS NULL))
);
CREATE INDEX deliveries_due ON deliveries (due_us) WHERE due_us IS NOT NULL;
CREATE INDEX deliveries_booking ON deliveries (booking_id, id);
