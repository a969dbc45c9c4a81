-- SQLite twin of postgres/0005 (SQLite adds one column per statement and
-- no table constraints by ALTER, so the pairing check is per column).
ALTER TABLE bookings ADD COLUMN status_reason TEXT;
ALTER TABLE bookings ADD COLUMN refund_notice_secs INTEGER CHECK (refund_notice_secs >= 0);
ALTER TABLE bookings ADD COLUMN late_refund_percent INTEGER
    CHECK (late_refund_percent BETWEEN 0 AND 100);
