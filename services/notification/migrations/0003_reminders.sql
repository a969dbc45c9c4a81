-- Reminders, the same on PostgreSQL and SQLite.
--
-- A reminder is planned per confirmed booking and offset (e.g. 24 h and
-- 1 h before its start), for the booking version it was planned at. Every
-- newer event about the booking replans it in the same transaction that
-- records the event (a reschedule moves it, a cancellation ends it), and
-- when it comes due the sender checks the version again: a stale one is
-- never sent. A due reminder becomes a `deliveries` row of kind
-- `reminder`, so the email's retries, backoff and log are the ones every
-- message has.

-- `deliveries.kind` gains `reminder`. SQLite cannot alter a CHECK, so the
-- table is rebuilt (the one way both dialects share); it copies the log
-- once, at this migration.
CREATE TABLE deliveries_v3 (
    id              TEXT PRIMARY KEY,
    event_id        TEXT NOT NULL,
    booking_id      TEXT,
    kind            TEXT NOT NULL CHECK (kind IN ('confirmation', 'reschedule',
                        'cancellation', 'refund', 'payment_failed', 'reminder')),
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
    due_us          BIGINT,
    last_error      TEXT,
    created_us      BIGINT NOT NULL,
    updated_us      BIGINT NOT NULL,
    sent_us         BIGINT,
    UNIQUE (event_id, channel, recipient),
    CHECK ((status = 'pending') = (due_us IS NOT NULL)),
    CHECK ((status = 'sent') = (sent_us IS NOT NULL)),
    CHECK ((invite_method IS NULL) = (ics IS NULL))
);
INSERT INTO deliveries_v3 (id, event_id, booking_id, kind, channel, recipient, booking_version,
    subject, body, html, invite_method, ics, status, attempts, due_us, last_error, created_us,
    updated_us, sent_us)
SELECT id, event_id, booking_id, kind, channel, recipient, booking_version,
    subject, body, html, invite_method, ics, status, attempts, due_us, last_error, created_us,
    updated_us, sent_us
FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_v3 RENAME TO deliveries;
CREATE INDEX deliveries_due ON deliveries (due_us) WHERE due_us IS NOT NULL;
CREATE INDEX deliveries_booking ON deliveries (booking_id, id);

-- One row per booking, offset and channel: planned, then how it ended.
CREATE TABLE reminders (
    id              TEXT PRIMARY KEY,
    booking_id      TEXT NOT NULL,
    -- Seconds before the start.
    offset_s        BIGINT NOT NULL CHECK (offset_s > 0),
    channel         TEXT NOT NULL CHECK (channel IN ('email')),
    -- The booking version (and its start) it was planned for.
    booking_version BIGINT NOT NULL,
    start_us        BIGINT NOT NULL,
    -- `pending`: waiting (or taken: then `due_us` is when the lease
    -- lapses); `sent`: handed to `deliveries` (`delivery_id`);
    -- `superseded`: replanned or the booking is no longer confirmed;
    -- `stale`: found out of date when it came due; `skipped_late`: came
    -- due after the appointment had started (the service was down).
    status          TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'superseded', 'stale',
                        'skipped_late')),
    -- Raised by every take: the lease's token.
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    due_us          BIGINT,
    -- When it was planned to go (kept after it ended: lateness).
    planned_due_us  BIGINT NOT NULL,
    delivery_id     TEXT,
    created_us      BIGINT NOT NULL,
    updated_us      BIGINT NOT NULL,
    UNIQUE (booking_id, offset_s, channel),
    CHECK ((status = 'pending') = (due_us IS NOT NULL)),
    CHECK ((status = 'sent') = (delivery_id IS NOT NULL))
);
-- The due scan reads only what is pending, in due order.
CREATE INDEX reminders_due ON reminders (due_us) WHERE due_us IS NOT NULL;
