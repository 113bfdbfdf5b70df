-- Privacy: consent history, privacy-trimmed trip paths, human review, pseudonymised
-- premium records after erasure, and a database role for pricing and the workbench that
-- cannot read raw samples.

CREATE TABLE consents (
    consent_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    policy_id    text NOT NULL REFERENCES policies (policy_id) ON DELETE CASCADE,
    category     text NOT NULL CHECK (category IN ('location', 'motion', 'phone_use', 'obd')),
    purpose      text NOT NULL CHECK (purpose IN ('pricing', 'coaching', 'claims')),
    granted      boolean NOT NULL,
    text_version text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consents_policy_idx ON consents (policy_id, category, purpose, at DESC);

-- Each policy's secret displacement of its privacy-zone centres (telematics/privacy.py).
-- Never granted to the pricing role: with it the zones would reveal the trips' ends.
CREATE TABLE privacy_keys (
    policy_id      text PRIMARY KEY REFERENCES policies (policy_id) ON DELETE CASCADE,
    offset_east_m  double precision NOT NULL,
    offset_north_m double precision NOT NULL
);

-- Positions that may be shown outside the raw store: privacy zones already removed.
CREATE TABLE trip_paths (
    device_id  text NOT NULL,
    trip_id    text NOT NULL,
    policy_id  text NOT NULL,
    t_s        double precision[] NOT NULL,
    lat_deg    double precision[] NOT NULL,
    lon_deg    double precision[] NOT NULL,
    speed_mps  double precision[] NOT NULL,
    zone_start_m double precision NOT NULL,
    zone_end_m   double precision NOT NULL,
    PRIMARY KEY (device_id, trip_id),
    FOREIGN KEY (device_id, trip_id) REFERENCES trips (device_id, trip_id) ON DELETE CASCADE
);

CREATE TABLE review_requests (
    review_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    policy_id   text NOT NULL REFERENCES policies (policy_id) ON DELETE CASCADE,
    premium_id  bigint,
    device_id   text,
    trip_id     text,
    kind        text NOT NULL CHECK (kind IN ('premium', 'trip_label', 'event')),
    reason      text NOT NULL,
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'accepted', 'rejected')),
    decision_note text,
    decided_by  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    decided_at  timestamptz
);
CREATE INDEX review_requests_open_idx ON review_requests (status, created_at);

-- Premium records outlive an erased policy, pseudonymised: no foreign key to the person.
ALTER TABLE premiums DROP CONSTRAINT premiums_policy_id_fkey;
ALTER TABLE premiums ADD COLUMN pseudonymised boolean NOT NULL DEFAULT false;

-- Roles are cluster-wide: create them once, grant in every database.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ubi_pricing') THEN
        CREATE ROLE ubi_pricing LOGIN;
    END IF;
END $$;
GRANT USAGE ON SCHEMA public TO ubi_pricing;
GRANT SELECT ON policies, trip_features, events, trip_paths, claims, rating_plans,
    premiums, audit_log, consents, review_requests TO ubi_pricing;
GRANT SELECT (device_id, trip_id, policy_id, status, source, started_at, ended_at,
    transport_mode, mode_confidence, label, label_set_at) ON trips TO ubi_pricing;
GRANT INSERT ON premiums, rating_plans, audit_log TO ubi_pricing;
GRANT UPDATE (status, decision_note, decided_by, decided_at) ON review_requests TO ubi_pricing;
REVOKE ALL ON gps_samples, imu_samples, obd_samples FROM ubi_pricing;
