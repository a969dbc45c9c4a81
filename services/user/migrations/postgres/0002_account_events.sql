-- Transactional outbox of account events (`account.deleted`), written in
-- the transaction that changes the account and relayed to the Redis stream.
-- Times are Unix seconds, as in 0001.
CREATE TABLE account_events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    account_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    published_at BIGINT
);
CREATE INDEX account_events_unpublished ON account_events (created_at, id)
    WHERE published_at IS NULL;
CREATE INDEX account_events_published ON account_events (published_at)
    WHERE published_at IS NOT NULL;
