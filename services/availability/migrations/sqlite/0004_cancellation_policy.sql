-- A refund rule per appointment type, snapshotted on every claim (see the
-- PostgreSQL migration 0006). Both NULL: a full refund always.
ALTER TABLE appointment_types ADD COLUMN full_refund_notice_hours INTEGER
    CHECK (full_refund_notice_hours BETWEEN 0 AND 8760);
ALTER TABLE appointment_types ADD COLUMN late_refund_percent INTEGER
    CHECK (late_refund_percent BETWEEN 0 AND 100)
    CHECK ((full_refund_notice_hours IS NULL) = (late_refund_percent IS NULL));

ALTER TABLE claims ADD COLUMN full_refund_notice_hours INTEGER
    CHECK (full_refund_notice_hours BETWEEN 0 AND 8760);
ALTER TABLE claims ADD COLUMN late_refund_percent INTEGER
    CHECK (late_refund_percent BETWEEN 0 AND 100)
    CHECK ((full_refund_notice_hours IS NULL) = (late_refund_percent IS NULL));
