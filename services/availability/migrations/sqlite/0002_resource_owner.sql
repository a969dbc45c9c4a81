-- Resources get an owner: the account (token subject) that manages them.
-- Rows from before owners existed get '' (only admins manage those).
-- SQLite cannot drop a column default; the service always sets it.
ALTER TABLE resources ADD COLUMN owner_id TEXT NOT NULL DEFAULT '';
CREATE INDEX resources_owner ON resources (owner_id, id);
