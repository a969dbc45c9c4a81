-- A refund rule per appointment type for cancelled paid bookings: all of
-- the price back until full_refund_notice_hours before the start,
-- late_refund_percent of it after. Both NULL: a full refund always.
-- Claims snapshot the rule when made (as they do the price), so a booking
-- keeps the terms it was made under when the type changes later.
--
-- The checks are NOT VALID: the columns are new, so every existing row is
-- NULL and passes, and validating would scan claims under this migration's
-- exclusive lock. New and updated rows are checked all the same.
ALTER TABLE appointment_types
    ADD COLUMN full_refund_notice_hours bigint,
    ADD COLUMN late_refund_percent bigint,
    ADD CONSTRAINT appointment_types_refund_notice
        CHECK (full_refund_notice_hours BETWEEN 0 AND 8760) NOT VALID,
    ADD CONSTRAINT appointment_types_late_refund
        CHECK (late_refund_percent BETWEEN 0 AND 100) NOT VALID,
    ADD CONSTRAINT appointment_types_whole_policy
        CHECK ((full_refund_notice_hours IS NULL) = (late_refund_percent IS NULL)) NOT VALID;

ALTER TABLE claims
    ADD COLUMN full_refund_notice_hours bigint,
    ADD COLUMN late_refund_percent bigint,
    ADD CONSTRAINT claims_refund_notice
        CHECK (full_refund_notice_hours BETWEEN 0 AND 8760) NOT VALID,
    ADD CONSTRAINT claims_late_refund
        CHECK (late_refund_percent BETWEEN 0 AND 100) NOT VALID,
    ADD CONSTRAINT claims_whole_policy
        CHECK ((full_refund_notice_hours IS NULL) = (late_refund_percent IS NULL)) NOT VALID;
