-- Trips found inside a dongle's continuous OBD feed: the feed itself is a container
-- (source 'obd_feed', never scored); each trip found in it is a trip of its own with
-- source 'obd' and the id of the feed whose samples hold it.
ALTER TABLE trips DROP CONSTRAINT trips_source_check;
ALTER TABLE trips ADD CONSTRAINT trips_source_check
    CHECK (source IN ('phone', 'obd', 'gpx', 'obd_feed'));
ALTER TABLE trips ADD COLUMN feed_id text;
CREATE INDEX trips_feed_idx ON trips (device_id, feed_id) WHERE feed_id IS NOT NULL;
