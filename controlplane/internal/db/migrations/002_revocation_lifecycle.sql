-- Revocation services, lifecycle sweeps and notifications.

-- Per-CA lifecycle threshold (NULL: the global default from the config).
ALTER TABLE cas ADD COLUMN expiry_threshold interval;

-- Delegated OCSP responder per CA: a certificate issued by the CA with
-- id-kp-OCSPSigning and id-pkix-ocsp-nocheck, its key in the key store.
CREATE TABLE ocsp_responders (
    ca_id       uuid PRIMARY KEY REFERENCES cas(id),
    key_ref     text NOT NULL,
    cert_der    bytea NOT NULL,
    not_after   timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Pre-signed OCSP responses shared by every replica. A revocation deletes
-- the row in its own transaction; the refresher re-signs rows before
-- next_update.
CREATE TABLE ocsp_responses (
    issuer_id   uuid NOT NULL REFERENCES cas(id),
    serial      text NOT NULL,
    der         bytea NOT NULL,
    this_update timestamptz NOT NULL,
    next_update timestamptz NOT NULL,
    PRIMARY KEY (issuer_id, serial)
);
CREATE INDEX ocsp_responses_next_update ON ocsp_responses (next_update);

-- CRLs per CA: the newest full CRL and delta CRLs. crl_number grows per
-- CA across both kinds (RFC 5280 5.2.3).
CREATE TABLE crls (
    ca_id        uuid NOT NULL REFERENCES cas(id),
    crl_number   bigint NOT NULL,
    is_delta     boolean NOT NULL,
    base_number  bigint,             -- for a delta: the full CRL it applies to
    der          bytea NOT NULL,
    this_update  timestamptz NOT NULL,
    next_update  timestamptz NOT NULL,
    -- for a full CRL: the revocation time up to which it is complete
    covers_until timestamptz NOT NULL,
    PRIMARY KEY (ca_id, crl_number)
);
CREATE INDEX crls_latest ON crls (ca_id, is_delta, crl_number DESC);
-- Revoked certificates per issuer, ordered by revocation time: what full
-- and delta CRLs read.
CREATE INDEX certificates_revoked ON certificates (issuer_id, revoked_at) WHERE status = 'revoked';

-- Notification subscriptions and their deliveries. Deliveries are keyed
-- by (subscription, event), so fan-out is idempotent; the key is also the
-- idempotency key receivers see.
CREATE TABLE subscriptions (
    id           uuid PRIMARY KEY,
    name         text NOT NULL,
    channel      text NOT NULL CHECK (channel IN ('webhook', 'email', 'chat')),
    target       text NOT NULL,          -- URL or email address
    secret       text NOT NULL DEFAULT '', -- HMAC key for webhooks
    event_kinds  text[] NOT NULL DEFAULT '{}', -- empty: every kind
    ca_id        uuid REFERENCES cas(id),
    dms_id       uuid REFERENCES dmss(id),
    device_id    text REFERENCES devices(id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    disabled_at  timestamptz
);

CREATE TABLE deliveries (
    subscription_id uuid NOT NULL REFERENCES subscriptions(id) ON DELETE CASCADE,
    event_id        bigint NOT NULL REFERENCES events(id),
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text NOT NULL DEFAULT '',
    delivered_at    timestamptz,
    PRIMARY KEY (subscription_id, event_id)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';

-- Singleton state of background jobs (fan-out watermark, digest day).
CREATE TABLE job_state (
    name   text PRIMARY KEY,
    value  text NOT NULL
);

-- Events carry the CA they concern, for subscription filters.
ALTER TABLE events ADD COLUMN ca_id uuid;
