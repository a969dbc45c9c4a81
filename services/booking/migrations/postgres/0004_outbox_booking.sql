-- Erasing a customer rewrites the outbox rows of their bookings, which are
-- kept for `outbox_retention` after publishing. Without this index that
-- read every retained row (and decoded its payload) per erased account.
CREATE INDEX outbox_booking ON booking.outbox (booking_id);
