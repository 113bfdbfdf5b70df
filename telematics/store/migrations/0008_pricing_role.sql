-- The pricing side (rating, the underwriter workbench and API, the provisional repricer)
-- connects as ubi_pricing at run time. What it needs beyond 0003, 0004 and 0007, and
-- still no raw samples, credentials or privacy-zone keys:
--
-- * underwriters set, reverse and decide trip labels: a trip's label and when it was set,
--   and the row lock (FOR UPDATE needs UPDATE on a column) that serialises a relabel with
--   the trip's scoring;
-- * the provisional repricer claims due policies with DELETE ... FOR UPDATE SKIP LOCKED,
--   which likewise needs UPDATE on a column of provisional_due.
GRANT UPDATE (label, label_set_at) ON trips TO ubi_pricing;
GRANT UPDATE (due_since) ON provisional_due TO ubi_pricing;
