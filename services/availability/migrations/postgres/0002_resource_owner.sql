-- Resources get an owner: the account (token subject) that manages them.
-- Rows from before owners existed get '' (only admins manage those); new
-- rows must name one, so the default is dropped again.
ALTER TABLE resources ADD COLUMN owner_id text NOT NULL DEFAULT '';
ALTER TABLE resources ALTER COLUMN owner_id DROP DEFAULT;
CREATE INDEX resources_owner ON resources (owner_id, id);
