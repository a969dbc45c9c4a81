-- The customer's locale for dates in messages (as booking normalises it,
-- e.g. `de-DE`), the same on PostgreSQL and SQLite.
ALTER TABLE bookings ADD COLUMN customer_locale TEXT;
