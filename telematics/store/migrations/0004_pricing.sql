-- Pricing on the database (telematics/rating.py): one stored premium per policy, period and
-- plan version (re-running a repricing replaces it), one provisional premium per policy and
-- month, the usage exposure a renewal cap needs, the coaching targets of each repricing run,
-- and the pricing role's rights to write them.

ALTER TABLE premiums ADD COLUMN usage_exposure_years double precision;
ALTER TABLE premiums ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- Keep the latest of any duplicates written before the keys existed.
DELETE FROM premiums p USING premiums q
 WHERE p.kind = 'period' AND q.kind = 'period' AND p.policy_id = q.policy_id
   AND p.period_start = q.period_start AND p.period_end = q.period_end
   AND p.plan_version = q.plan_version AND p.premium_id < q.premium_id;
DELETE FROM premiums p USING premiums q
 WHERE p.kind = 'provisional' AND q.kind = 'provisional' AND p.policy_id = q.policy_id
   AND p.period_start = q.period_start AND p.premium_id < q.premium_id;

CREATE UNIQUE INDEX premiums_period_key ON premiums (policy_id, period_start, period_end, plan_version)
    WHERE kind = 'period';
-- A provisional premium grows with the month (its period_end moves): one row per month.
CREATE UNIQUE INDEX premiums_provisional_key ON premiums (policy_id, period_start)
    WHERE kind = 'provisional';
CREATE INDEX premiums_period_idx ON premiums (period_start, period_end, kind);

-- The behaviour values each repricing coaches towards (the portfolio medians of the run)
-- and its totals, so that a later partial or provisional repricing coaches towards the
-- same targets. No policy's data: aggregates of a plan and period.
CREATE TABLE pricing_runs (
    plan_version     text NOT NULL REFERENCES rating_plans (version),
    period_start     date NOT NULL,
    period_end       date NOT NULL,
    policies         integer NOT NULL CHECK (policies >= 0),
    total_premium_cents bigint NOT NULL,
    coaching_targets jsonb NOT NULL,
    code_version     text NOT NULL,
    priced_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plan_version, period_start, period_end),
    CHECK (period_end > period_start)
);

GRANT SELECT, INSERT, UPDATE ON pricing_runs TO ubi_pricing;
GRANT UPDATE (amount, currency, breakdown, inputs, code_version, sha256, period_end,
    plan_version, usage_exposure_years, updated_at) ON premiums TO ubi_pricing;
