-- The booking a stored response shows, so erasing a customer can also scrub
-- other callers' replays of it. Keys stored before this have none.
ALTER TABLE booking.idempotency_keys ADD COLUMN booking_id UUID;
CREATE INDEX idempotency_keys_booking ON booking.idempotency_keys (booking_id)
    WHERE booking_id IS NOT NULL;
