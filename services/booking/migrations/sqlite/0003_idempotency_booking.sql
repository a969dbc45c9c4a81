-- SQLite twin of migrations/postgres/0003_idempotency_booking.sql.
ALTER TABLE idempotency_keys ADD COLUMN booking_id TEXT;
CREATE INDEX idempotency_keys_booking ON idempotency_keys (booking_id)
    WHERE booking_id IS NOT NULL;
