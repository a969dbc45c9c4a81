-- Paid bookings: why a booking ended as it did (e.g. `slot_taken`), and the
-- appointment type's refund rule as it was when the time was claimed (both
-- NULL: a full refund whenever cancelled).
ALTER TABLE booking.bookings
    ADD COLUMN status_reason TEXT,
    ADD COLUMN refund_notice_secs BIGINT CHECK (refund_notice_secs >= 0),
    ADD COLUMN late_refund_percent SMALLINT
        CHECK (late_refund_percent BETWEEN 0 AND 100),
    ADD CONSTRAINT bookings_policy_whole
        CHECK ((refund_notice_secs IS NULL) = (late_refund_percent IS NULL));
