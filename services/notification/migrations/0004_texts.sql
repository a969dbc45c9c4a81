-- Texts (SMS), the same on PostgreSQL and SQLite: a booking may carry the
-- customer's verified phone, and reminders go by text too. SQLite cannot
-- alter a CHECK, so `reminders` is rebuilt (as 0003 rebuilt `deliveries`).
ALTER TABLE bookings ADD COLUMN customer_phone TEXT;

CREATE TABLE reminders_v4 (
    id              TEXT PRIMARY KEY,
    booking_id      TEXT NOT NULL,
    offset_s        BIGINT NOT NULL CHECK (offset_s > 0),
    channel         TEXT NOT NULL CHECK (channel IN ('email', 'sms')),
    booking_version BIGINT NOT NULL,
    start_us        BIGINT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'superseded', 'stale',
                        'skipped_late')),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    due_us          BIGINT,
    planned_due_us  BIGINT NOT NULL,
    delivery_id     TEXT,
    created_us      BIGINT NOT NULL,
    updated_us      BIGINT NOT NULL,
    UNIQUE (booking_id, offset_s, channel),
    CHECK ((status = 'pending') = (due_us IS NOT NULL)),
    CHECK ((status = 'sent') = (delivery_id IS NOT NULL))
);
INSERT INTO reminders_v4 (id, booking_id, offset_s, channel, booking_version, start_us, status,
    attempts, due_us, planned_due_us, delivery_id, created_us, updated_us)
SELECT id, booking_id, offset_s, channel, booking_version, start_us, status,
    attempts, due_us, planned_due_us, delivery_id, created_us, updated_us
FROM reminders;
DROP TABLE reminders;
ALTER TABLE reminders_v4 RENAME TO reminders;
CREATE INDEX reminders_due ON reminders (due_us) WHERE due_us IS NOT NULL;
