-- Edge CAs keep their keys on gateways, so the control plane cannot issue
-- their OCSP responder certificates itself: it makes the responder key and
-- a CSR, the gateway signs it with the edge CA key, and the certificate
-- comes back. This table holds the request in between.
CREATE TABLE ocsp_responder_requests (
    ca_id       uuid PRIMARY KEY REFERENCES cas(id),
    key_ref     text NOT NULL,
    csr_der     bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
