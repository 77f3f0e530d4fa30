-- DMS policy, second part: EST labels, the delegated edge CA's validity
-- and name constraints, the device-authentication webhook, the online
-- wait and just-in-time device registration. The agent receives all of it
-- over the sync link (syncpb.Policy).
ALTER TABLE dmss
    -- [{"name": "...", "ca_id": "...", "profile": "..."}], names unique;
    -- each ca_id is one of the DMS's authorized CAs (checked by the
    -- application, which also keeps the list in sync when CAs change).
    ADD COLUMN labels                jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN edge_ca_validity      interval NOT NULL DEFAULT '30 days'
        CHECK (edge_ca_validity >= interval '1 day' AND edge_ca_validity <= interval '3650 days'),
    -- DNS domains, IP CIDRs, email domains (with "@") and "uri:" domains.
    ADD COLUMN edge_name_constraints text[] NOT NULL DEFAULT '{}',
    ADD COLUMN webhook_url           text NOT NULL DEFAULT '',
    ADD COLUMN online_wait_ms        int NOT NULL DEFAULT 5000 CHECK (online_wait_ms BETWEEN 0 AND 60000),
    ADD COLUMN jit_registration      boolean NOT NULL DEFAULT true;

-- The order in which an admin listed a DMS's authorized CAs: the first one
-- signs when an enrollment names neither a CA nor a label, and is the
-- parent of the DMS's edge CA. Rows from before keep the old order (by id).
ALTER TABLE dms_authorized_cas ADD COLUMN position int NOT NULL DEFAULT 0;

-- Answers remembered with the record, so a redelivered record gets the
-- same one: an enrollment refused with an error (result_error), or an
-- edge CA certified (result_ca_id). result_serial (006) keeps issued
-- certificates.
ALTER TABLE sync_records
    ADD COLUMN result_error text,
    ADD COLUMN result_ca_id uuid REFERENCES cas(id);
