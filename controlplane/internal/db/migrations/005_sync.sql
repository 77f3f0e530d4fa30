-- Sync with agents: every record applied is remembered by (dms, record
-- id), in the transaction that applies it, so a redelivered message
-- changes nothing (at-least-once delivery, exactly-once effect).
CREATE TABLE sync_records (
    dms_id      uuid NOT NULL REFERENCES dmss(id),
    record_id   text NOT NULL,
    kind        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dms_id, record_id)
);

-- What heartbeats tell about each DMS.
ALTER TABLE dmss
    ADD COLUMN last_seen_at        timestamptz,
    ADD COLUMN agent_version       text NOT NULL DEFAULT '',
    ADD COLUMN queue_depth         bigint NOT NULL DEFAULT 0,
    ADD COLUMN edge_ca_not_after   timestamptz,
    ADD COLUMN last_sync_at        timestamptz;

-- Generic records an agent syncs (events and, in tests and benchmarks,
-- opaque payloads), one row each.
CREATE TABLE sync_events (
    dms_id      uuid NOT NULL REFERENCES dmss(id),
    record_id   text NOT NULL,
    device_id   text NOT NULL DEFAULT '',
    kind        text NOT NULL,
    detail      text NOT NULL DEFAULT '{}',
    at          timestamptz NOT NULL,
    PRIMARY KEY (dms_id, record_id)
);
