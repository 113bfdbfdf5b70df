-- Core schema: policies, devices, raw sample hypertables, trips, features, events, claims,
-- rating plans, premiums and the audit trail. Timestamps are timestamptz (UTC on the wire).
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE policies (
    policy_id      text PRIMARY KEY,
    time_zone      text NOT NULL,
    start_date     date NOT NULL DEFAULT CURRENT_DATE,
    end_date       date,
    rating_factors jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (time_zone <> '')
);

CREATE TABLE devices (
    device_id    text PRIMARY KEY,
    policy_id    text NOT NULL REFERENCES policies (policy_id),
    kind         text NOT NULL CHECK (kind IN ('phone', 'obd')),
    api_key_hash bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX devices_policy_idx ON devices (policy_id);

-- Raw samples. The natural key (device, trip, seq, time) makes a re-sent upload a no-op.
CREATE TABLE gps_samples (
    time         timestamptz NOT NULL,
    device_id    text NOT NULL,
    trip_id      text NOT NULL,
    seq          bigint NOT NULL,
    lat_deg      double precision NOT NULL CHECK (lat_deg BETWEEN -90 AND 90),
    lon_deg      double precision NOT NULL CHECK (lon_deg BETWEEN -180 AND 180),
    speed_mps    double precision,
    heading_deg  double precision,
    accuracy_m   double precision,
    altitude_m   double precision,
    speed_limit_mps double precision,
    PRIMARY KEY (device_id, trip_id, seq, time)
);
SELECT create_hypertable('gps_samples', by_range('time', INTERVAL '1 day'));

CREATE TABLE imu_samples (
    time       timestamptz NOT NULL,
    device_id  text NOT NULL,
    trip_id    text NOT NULL,
    seq        bigint NOT NULL,
    acc_x_mps2 double precision NOT NULL,
    acc_y_mps2 double precision NOT NULL,
    acc_z_mps2 double precision NOT NULL,
    gyr_x_radps double precision,
    gyr_y_radps double precision,
    gyr_z_radps double precision,
    PRIMARY KEY (device_id, trip_id, seq, time)
);
SELECT create_hypertable('imu_samples', by_range('time', INTERVAL '1 day'));

CREATE TABLE obd_samples (
    time        timestamptz NOT NULL,
    device_id   text NOT NULL,
    trip_id     text NOT NULL,
    seq         bigint NOT NULL,
    speed_mps   double precision,
    rpm         double precision,
    odometer_m  double precision,
    ignition    boolean,
    throttle_pct double precision,
    PRIMARY KEY (device_id, trip_id, seq, time)
);
SELECT create_hypertable('obd_samples', by_range('time', INTERVAL '1 day'));

CREATE TABLE trips (
    device_id   text NOT NULL REFERENCES devices (device_id),
    trip_id     text NOT NULL,
    policy_id   text NOT NULL REFERENCES policies (policy_id),
    status      text NOT NULL DEFAULT 'open'
                CHECK (status IN ('open', 'closed', 'scored', 'unscored', 'failed')),
    started_at  timestamptz,
    ended_at    timestamptz,
    last_upload_at timestamptz NOT NULL DEFAULT now(),
    transport_mode text,
    mode_confidence double precision,
    label       text CHECK (label IN ('driver', 'passenger', 'transit', 'not_me')),
    label_set_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, trip_id)
);
CREATE INDEX trips_policy_time_idx ON trips (policy_id, started_at);

CREATE TABLE trip_features (
    device_id   text NOT NULL,
    trip_id     text NOT NULL,
    policy_id   text NOT NULL,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz NOT NULL,
    scored      boolean NOT NULL,
    distance_m  double precision NOT NULL,
    duration_s  double precision NOT NULL,
    features    jsonb NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now(),
    code_version text NOT NULL,
    PRIMARY KEY (device_id, trip_id),
    FOREIGN KEY (device_id, trip_id) REFERENCES trips (device_id, trip_id) ON DELETE CASCADE
);
CREATE INDEX trip_features_policy_idx ON trip_features (policy_id, started_at);

CREATE TABLE events (
    device_id  text NOT NULL,
    trip_id    text NOT NULL,
    event_no   integer NOT NULL,
    kind       text NOT NULL,
    severity   text NOT NULL,
    start_at   timestamptz NOT NULL,
    end_at     timestamptz NOT NULL,
    peak_value double precision NOT NULL,
    speed_mps  double precision,
    lat_deg    double precision,
    lon_deg    double precision,
    disputed   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (device_id, trip_id, event_no),
    FOREIGN KEY (device_id, trip_id) REFERENCES trips (device_id, trip_id) ON DELETE CASCADE
);

CREATE TABLE claims (
    claim_id    text PRIMARY KEY,
    policy_id   text NOT NULL REFERENCES policies (policy_id),
    occurred_at timestamptz NOT NULL,
    amount      numeric(14, 2) NOT NULL CHECK (amount >= 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX claims_policy_idx ON claims (policy_id, occurred_at);

-- Rating plans are immutable: a new version is a new row, never an update.
CREATE TABLE rating_plans (
    version    text PRIMARY KEY,
    document   jsonb NOT NULL,
    sha256     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION refuse_plan_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'rating plan % is immutable: publish a new version', OLD.version;
END $$;
CREATE TRIGGER rating_plans_immutable BEFORE UPDATE ON rating_plans
    FOR EACH ROW EXECUTE FUNCTION refuse_plan_change();

CREATE TABLE premiums (
    premium_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    policy_id    text NOT NULL REFERENCES policies (policy_id),
    period_start date NOT NULL,
    period_end   date NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('period', 'provisional')),
    plan_version text NOT NULL REFERENCES rating_plans (version),
    amount       numeric(14, 2) NOT NULL,
    currency     text NOT NULL,
    breakdown    jsonb NOT NULL,
    inputs       jsonb NOT NULL,
    code_version text NOT NULL,
    sha256       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (period_end > period_start)
);
CREATE INDEX premiums_policy_period_idx ON premiums (policy_id, period_start, kind);

CREATE TABLE audit_log (
    audit_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    action     text NOT NULL,
    policy_id  text,
    subject    text,
    detail     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_policy_idx ON audit_log (policy_id, at);
