-- Where texts about the booking go: the customer's verified phone (E.164),
-- given with the booking and checked against the caller's access token.
ALTER TABLE booking.bookings
    ADD COLUMN customer_phone TEXT CHECK (customer_phone ~ '^\+[0-9]{8,15}$');
