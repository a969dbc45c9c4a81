-- Who a booking belongs to, for authorisation. Bookings made before this
-- migration have neither (NULL never equals a subject), so only admins see them.
ALTER TABLE booking.bookings
    ADD COLUMN customer_id       TEXT,
    ADD COLUMN resource_owner_id TEXT;
-- List filters: (start_at, id) order within one customer or one owner.
CREATE INDEX bookings_customer_start_id ON booking.bookings (customer_id, start_at, id);
CREATE INDEX bookings_owner_start_id ON booking.bookings (resource_owner_id, start_at, id);

-- Idempotency keys are scoped per principal. Keys stored before this belong
-- to no principal ('') and age out with the TTL.
ALTER TABLE booking.idempotency_keys ADD COLUMN subject TEXT NOT NULL DEFAULT '';
ALTER TABLE booking.idempotency_keys ALTER COLUMN subject DROP DEFAULT;
ALTER TABLE booking.idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE booking.idempotency_keys ADD PRIMARY KEY (subject, key);
