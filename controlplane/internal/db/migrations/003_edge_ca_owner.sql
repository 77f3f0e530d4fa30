-- Delegated edge CAs belong to the DMS whose gateway holds their key;
-- disabling the DMS revokes them with its identity certificate.
ALTER TABLE cas ADD COLUMN dms_id uuid REFERENCES dmss(id);
CREATE INDEX cas_dms ON cas (dms_id) WHERE dms_id IS NOT NULL;
