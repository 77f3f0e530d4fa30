-- device_auth "client_cert_or_secret": a manufacturer certificate if the
-- device presents one, else a one-time secret.
ALTER TABLE dmss DROP CONSTRAINT dmss_device_auth_check;
ALTER TABLE dmss ADD CONSTRAINT dmss_device_auth_check
    CHECK (device_auth IN ('client_cert', 'basic_secret', 'client_cert_or_secret', 'webhook'));
