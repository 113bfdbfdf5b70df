-- Policies whose provisional premium is due: a scored trip marks its policy here in the
-- same transaction, and the service reprices the marked policies together within about a
-- second (or at once when someone reads the premium). The mark holds no data of its own.
CREATE TABLE provisional_due (
    policy_id text PRIMARY KEY REFERENCES policies (policy_id) ON DELETE CASCADE,
    due_since timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX provisional_due_since_idx ON provisional_due (due_since);
GRANT SELECT, INSERT, DELETE ON provisional_due TO ubi_pricing;
