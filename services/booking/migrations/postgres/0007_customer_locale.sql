-- The customer's language and region for dates in messages (BCP 47
-- language with an optional region, as the API normalises it: `de-DE`).
ALTER TABLE booking.bookings
    ADD COLUMN customer_locale TEXT CHECK (customer_locale ~ '^[a-z]{2,3}(-[A-Z]{2})?$');
