-- Service access: hashed bearer tokens for staff, idempotency records for device writes.
CREATE TABLE api_tokens (
    token_hash bytea PRIMARY KEY,
    name       text NOT NULL,
    scopes     text[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    CHECK (scopes <@ ARRAY['underwriter', 'admin']::text[])
);

-- One row per (device, Idempotency-Key); written in the same transaction as the samples.
CREATE TABLE idempotency_keys (
    device_id       text NOT NULL,
    idempotency_key uuid NOT NULL,
    request_sha256  bytea NOT NULL,
    response_status integer NOT NULL,
    response_body   bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (device_id, idempotency_key)
);
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (expires_at);

ALTER TABLE trips ADD COLUMN n_gps integer NOT NULL DEFAULT 0;
ALTER TABLE trips ADD COLUMN n_imu integer NOT NULL DEFAULT 0;
ALTER TABLE trips ADD COLUMN source text NOT NULL DEFAULT 'phone'
    CHECK (source IN ('phone', 'obd', 'gpx'));
CREATE INDEX trips_open_idx ON trips (last_upload_at) WHERE status = 'open';
