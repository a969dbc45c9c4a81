-- SQLite twin of postgres/0006 (no regular expressions: the same rule by
-- prefix, length and "no non-digit after the +").
ALTER TABLE bookings ADD COLUMN customer_phone TEXT
    CHECK (substr(customer_phone, 1, 1) = '+'
        AND length(customer_phone) BETWEEN 9 AND 16
        AND substr(customer_phone, 2) NOT GLOB '*[^0-9]*');
