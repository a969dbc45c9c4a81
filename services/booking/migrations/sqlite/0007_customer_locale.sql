-- SQLite twin of postgres/0007 (by length and GLOB instead of a regular
-- expression).
ALTER TABLE bookings ADD COLUMN customer_locale TEXT
    CHECK (customer_locale GLOB '[a-z][a-z]' OR customer_locale GLOB '[a-z][a-z][a-z]'
        OR customer_locale GLOB '[a-z][a-z]-[A-Z][A-Z]'
        OR customer_locale GLOB '[a-z][a-z][a-z]-[A-Z][A-Z]');
