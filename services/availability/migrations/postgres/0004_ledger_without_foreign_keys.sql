-- The ledger tables (blocks, claims) drop their foreign keys. Each was a
-- trigger query per inserted row, about a third of the cost of committing a
-- claim, and none of them can fire: every write to a resource's blocks and
-- claims, and every deletion of the resource or one of its appointment
-- types, happens under that resource's row lock (ledger_seq), where the
-- resource, the type and the claim's block are known to exist; deleting a
-- resource or type is refused while it has live claims and removes its
-- ledger rows explicitly in the same transaction. `berth check-ledger`
-- reports any row whose resource, type or block is missing.
ALTER TABLE claims
    DROP CONSTRAINT claims_block_id_fkey,
    DROP CONSTRAINT claims_resource_id_fkey,
    DROP CONSTRAINT claims_appointment_type_id_fkey;
ALTER TABLE blocks
    DROP CONSTRAINT blocks_resource_id_fkey,
    DROP CONSTRAINT blocks_appointment_type_id_fkey;

-- Nothing looks claims up by owner (a repeat by the same owner is found in
-- the slot's snapshot), so the index only cost every insert.
DROP INDEX claims_owner;
