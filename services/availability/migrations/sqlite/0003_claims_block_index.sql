-- Deleting an emptied block sets its claims' block_id to NULL (ON DELETE SET
-- NULL); SQLite looks the claims up by block_id, which the partial index on
-- live claims cannot serve, so every freed slot scanned the claims table.
DROP INDEX claims_block;
CREATE INDEX claims_block ON claims (block_id);

-- Nothing looks claims up by owner, so the index only cost every insert.
DROP INDEX claims_owner;
