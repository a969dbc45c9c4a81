-- Availability schema (PostgreSQL). Runs with search_path = availability, public.
-- Times are timestamptz; every ledger interval is half-open [starts_at, ends_at).

CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA public;

CREATE TABLE resources (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    time_zone   text NOT NULL,
    -- berth_slots::WeeklyHours as JSON.
    weekly      jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Highest Redis fencing token seen; a stale lock holder cannot raise it.
    fence       bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE appointment_types (
    id                     uuid PRIMARY KEY,
    resource_id            uuid NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    name                   text NOT NULL,
    duration_minutes       bigint NOT NULL CHECK (duration_minutes > 0),
    interval_minutes       bigint NOT NULL CHECK (interval_minutes > 0),
    buffer_before_minutes  bigint NOT NULL CHECK (buffer_before_minutes >= 0),
    buffer_after_minutes   bigint NOT NULL CHECK (buffer_after_minutes >= 0),
    min_notice_minutes     bigint NOT NULL CHECK (min_notice_minutes >= 0),
    horizon_minutes        bigint NOT NULL CHECK (horizon_minutes > 0),
    capacity               bigint NOT NULL CHECK (capacity > 0),
    price_minor            bigint NOT NULL CHECK (price_minor >= 0),
    currency               text NOT NULL,
    created_at             timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL
);
CREATE INDEX appointment_types_resource ON appointment_types (resource_id);

CREATE TABLE date_overrides (
    resource_id  uuid NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    date         date NOT NULL,
    -- berth_slots::OverrideHours as JSON.
    hours        jsonb NOT NULL,
    PRIMARY KEY (resource_id, date)
);

CREATE TABLE calendars (
    id                     uuid PRIMARY KEY,
    resource_id            uuid NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    name                   text,
    url                    text,
    refresh_interval_secs  bigint NOT NULL,
    -- Uploaded text, or the last successfully fetched feed.
    ics                    text,
    fetched_at             timestamptz,
    last_error             text,
    created_at             timestamptz NOT NULL
);
CREATE INDEX calendars_resource ON calendars (resource_id);

CREATE TABLE busy_times (
    calendar_id  uuid NOT NULL REFERENCES calendars (id) ON DELETE CASCADE,
    resource_id  uuid NOT NULL,
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz NOT NULL,
    CHECK (ends_at > starts_at)
);
CREATE INDEX busy_times_resource ON busy_times (resource_id, starts_at);
CREATE INDEX busy_times_calendar ON busy_times (calendar_id);

-- One row per occupied slot. The exclusion constraint is the final guard of
-- "no double booking": whatever the application or the locks do, two blocks
-- on one resource can never overlap. Seats of one slot share one block.
CREATE TABLE blocks (
    id                   uuid PRIMARY KEY,
    resource_id          uuid NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    appointment_type_id  uuid NOT NULL REFERENCES appointment_types (id) ON DELETE CASCADE,
    starts_at            timestamptz NOT NULL,
    ends_at              timestamptz NOT NULL,
    period               tstzrange GENERATED ALWAYS AS (tstzrange(starts_at, ends_at, '[)')) STORED,
    capacity             bigint NOT NULL CHECK (capacity > 0),
    CHECK (ends_at > starts_at),
    CONSTRAINT blocks_no_overlap EXCLUDE USING gist (resource_id WITH =, period WITH &&)
);

-- Claims (holds and bookings). A live claim (not released, not lapsed)
-- always sits in a block with the same period; released rows are kept so a
-- late confirm can tell "expired" from "unknown".
CREATE TABLE claims (
    id                     uuid PRIMARY KEY,
    block_id               uuid REFERENCES blocks (id) ON DELETE SET NULL,
    resource_id            uuid NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    appointment_type_id    uuid NOT NULL REFERENCES appointment_types (id) ON DELETE CASCADE,
    starts_at              timestamptz NOT NULL,
    ends_at                timestamptz NOT NULL,
    period                 tstzrange GENERATED ALWAYS AS (tstzrange(starts_at, ends_at, '[)')) STORED,
    seats                  bigint NOT NULL CHECK (seats > 0),
    -- Snapshotted so later edits to the type never move existing buffers.
    buffer_before_minutes  bigint NOT NULL,
    buffer_after_minutes   bigint NOT NULL,
    price_minor            bigint NOT NULL,
    currency               text NOT NULL,
    owner                  text NOT NULL,
    expires_at             timestamptz,
    released_at            timestamptz,
    created_at             timestamptz NOT NULL,
    CHECK (ends_at > starts_at),
    CHECK (released_at IS NOT NULL OR block_id IS NOT NULL)
);
CREATE INDEX claims_live ON claims (resource_id, starts_at) WHERE released_at IS NULL;
CREATE INDEX claims_block ON claims (block_id) WHERE released_at IS NULL;
CREATE INDEX claims_lapsing ON claims (expires_at) WHERE released_at IS NULL AND expires_at IS NOT NULL;
CREATE INDEX claims_owner ON claims (owner);
