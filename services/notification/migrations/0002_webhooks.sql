-- Outbound webhooks (Standard Webhooks), the same on PostgreSQL and SQLite.
-- Their own tables rather than `deliveries` rows: a webhook has an
-- endpoint, a retry schedule and a dead letter, where a message has a
-- recipient, a subject and an invite.

-- Endpoints a platform registers. `owner_id` created it; `scope` says
-- which bookings it hears of: `platform` (made by an admin: all) or
-- `owner` (made by staff: bookings on resources `owner_id` manages).
CREATE TABLE webhook_endpoints (
    id              TEXT PRIMARY KEY,
    owner_id        TEXT NOT NULL,
    scope           TEXT NOT NULL CHECK (scope IN ('platform', 'owner')),
    url             TEXT NOT NULL,
    description     TEXT,
    -- JSON array of subscribed event types.
    event_types     TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('enabled', 'disabled')),
    -- Why it is disabled (by staff, or the receiver answered 410 Gone).
    disabled_reason TEXT,
    -- `whsec_…`; the previous one signs too until it expires (rotation).
    secret          TEXT NOT NULL,
    previous_secret TEXT,
    previous_secret_expires_us BIGINT,
    created_us      BIGINT NOT NULL,
    updated_us      BIGINT NOT NULL,
    CHECK ((status = 'disabled') = (disabled_reason IS NOT NULL)),
    CHECK ((previous_secret IS NULL) = (previous_secret_expires_us IS NULL))
);
CREATE INDEX webhook_endpoints_owner ON webhook_endpoints (owner_id, id);

-- One row per event and endpoint: the durable intent, its attempts and
-- outcome. Its id is the `webhook-id` header, the same on every attempt,
-- so a receiver can drop a repeat.
CREATE TABLE webhook_deliveries (
    id           TEXT PRIMARY KEY,
    endpoint_id  TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    booking_id   TEXT,
    -- The exact body sent (and signed).
    payload      TEXT NOT NULL,
    -- `dead`: given up (retries exhausted, refused, endpoint gone or
    -- disabled); replaying makes it `pending` again.
    status       TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'dead')),
    -- Raised by every take: the lease's token, never lowered.
    attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- `attempts` when it was last replayed: the retry schedule restarts.
    retry_from   INTEGER NOT NULL DEFAULT 0 CHECK (retry_from >= 0),
    -- When it is tried next; while a sender holds it, when its lease lapses.
    due_us       BIGINT,
    -- The receiver's last HTTP status, if it answered.
    last_status  INTEGER,
    last_error   TEXT,
    created_us   BIGINT NOT NULL,
    updated_us   BIGINT NOT NULL,
    sent_us      BIGINT,
    UNIQUE (event_id, endpoint_id),
    CHECK ((status = 'pending') = (due_us IS NOT NULL)),
    CHECK ((status = 'sent') = (sent_us IS NOT NULL)),
    CHECK (retry_from <= attempts)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (due_us) WHERE due_us IS NOT NULL;
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_dead ON webhook_deliveries (id) WHERE status = 'dead';
