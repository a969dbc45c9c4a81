-- Availability schema (SQLite, the embedded store of `berth dev`).
-- Ledger times are INTEGER microseconds since the Unix epoch so they compare
-- numerically; intervals are half-open [starts_at, ends_at).

CREATE TABLE resources (
    id          BLOB PRIMARY KEY,
    name        TEXT NOT NULL,
    time_zone   TEXT NOT NULL,
    weekly      TEXT NOT NULL DEFAULT '{}',
    fence       INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE appointment_types (
    id                     BLOB PRIMARY KEY,
    resource_id            BLOB NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    name                   TEXT NOT NULL,
    duration_minutes       INTEGER NOT NULL CHECK (duration_minutes > 0),
    interval_minutes       INTEGER NOT NULL CHECK (interval_minutes > 0),
    buffer_before_minutes  INTEGER NOT NULL CHECK (buffer_before_minutes >= 0),
    buffer_after_minutes   INTEGER NOT NULL CHECK (buffer_after_minutes >= 0),
    min_notice_minutes     INTEGER NOT NULL CHECK (min_notice_minutes >= 0),
    horizon_minutes        INTEGER NOT NULL CHECK (horizon_minutes > 0),
    capacity               INTEGER NOT NULL CHECK (capacity > 0),
    price_minor            INTEGER NOT NULL CHECK (price_minor >= 0),
    currency               TEXT NOT NULL,
    created_at             TEXT NOT NULL,
    updated_at             TEXT NOT NULL
);
CREATE INDEX appointment_types_resource ON appointment_types (resource_id);

CREATE TABLE date_overrides (
    resource_id  BLOB NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    date         TEXT NOT NULL,
    hours        TEXT NOT NULL,
    PRIMARY KEY (resource_id, date)
);

CREATE TABLE calendars (
    id                     BLOB PRIMARY KEY,
    resource_id            BLOB NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    name                   TEXT,
    url                    TEXT,
    refresh_interval_secs  INTEGER NOT NULL,
    ics                    TEXT,
    fetched_at             TEXT,
    last_error             TEXT,
    created_at             TEXT NOT NULL
);
CREATE INDEX calendars_resource ON calendars (resource_id);

CREATE TABLE busy_times (
    calendar_id  BLOB NOT NULL REFERENCES calendars (id) ON DELETE CASCADE,
    resource_id  BLOB NOT NULL,
    starts_at    INTEGER NOT NULL,
    ends_at      INTEGER NOT NULL,
    CHECK (ends_at > starts_at)
);
CREATE INDEX busy_times_resource ON busy_times (resource_id, starts_at);
CREATE INDEX busy_times_calendar ON busy_times (calendar_id);

CREATE TABLE blocks (
    id                   BLOB PRIMARY KEY,
    resource_id          BLOB NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    appointment_type_id  BLOB NOT NULL REFERENCES appointment_types (id) ON DELETE CASCADE,
    starts_at            INTEGER NOT NULL,
    ends_at              INTEGER NOT NULL,
    capacity             INTEGER NOT NULL CHECK (capacity > 0),
    CHECK (ends_at > starts_at)
);
CREATE INDEX blocks_resource ON blocks (resource_id, starts_at);

-- SQLite has no exclusion constraints; these triggers are the same final
-- guard: two blocks on one resource never overlap.
CREATE TRIGGER blocks_no_overlap_insert BEFORE INSERT ON blocks
WHEN EXISTS (
    SELECT 1 FROM blocks b
    WHERE b.resource_id = NEW.resource_id
      AND b.starts_at < NEW.ends_at AND b.ends_at > NEW.starts_at
)
BEGIN
    SELECT RAISE(ABORT, 'blocks_no_overlap');
END;

CREATE TRIGGER blocks_no_overlap_update BEFORE UPDATE OF resource_id, starts_at, ends_at ON blocks
WHEN EXISTS (
    SELECT 1 FROM blocks b
    WHERE b.id <> NEW.id AND b.resource_id = NEW.resource_id
      AND b.starts_at < NEW.ends_at AND b.ends_at > NEW.starts_at
)
BEGIN
    SELECT RAISE(ABORT, 'blocks_no_overlap');
END;

CREATE TABLE claims (
    id                     BLOB PRIMARY KEY,
    block_id               BLOB REFERENCES blocks (id) ON DELETE SET NULL,
    resource_id            BLOB NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    appointment_type_id    BLOB NOT NULL REFERENCES appointment_types (id) ON DELETE CASCADE,
    starts_at              INTEGER NOT NULL,
    ends_at                INTEGER NOT NULL,
    seats                  INTEGER NOT NULL CHECK (seats > 0),
    buffer_before_minutes  INTEGER NOT NULL,
    buffer_after_minutes   INTEGER NOT NULL,
    price_minor            INTEGER NOT NULL,
    currency               TEXT NOT NULL,
    owner                  TEXT NOT NULL,
    expires_at             INTEGER,
    released_at            INTEGER,
    created_at             INTEGER NOT NULL,
    CHECK (ends_at > starts_at),
    CHECK (released_at IS NOT NULL OR block_id IS NOT NULL)
);
CREATE INDEX claims_live ON claims (resource_id, starts_at) WHERE released_at IS NULL;
CREATE INDEX claims_block ON claims (block_id) WHERE released_at IS NULL;
CREATE INDEX claims_lapsing ON claims (expires_at) WHERE released_at IS NULL AND expires_at IS NOT NULL;
CREATE INDEX claims_owner ON claims (owner);
