-- Erasing a customer rewrites the outbox rows of their bookings, which are
-- kept for `outbox_retention` after publishing; find them without reading
-- every retained row.
CREATE INDEX outbox_booking ON outbox (booking_id);
