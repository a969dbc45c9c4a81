-- Counts the ledger transactions that locked the resource row: every lock
-- taken by the ledger (and by catalog operations that lock) raises it, and
-- every write to a resource's claims or blocks happens under that lock. A
-- claim decided on a snapshot can then commit in one statement that locks
-- the row only if the counter still has the snapshot's value, i.e. only if
-- nothing changed the claims or blocks since the snapshot was read.
ALTER TABLE resources ADD COLUMN ledger_seq bigint NOT NULL DEFAULT 0;
