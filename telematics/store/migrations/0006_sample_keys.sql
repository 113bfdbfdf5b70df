-- Cheaper index maintenance on bulk ingest, for the three raw-sample hypertables.
--
-- Device and trip ids are machine identifiers: compare them byte by byte (COLLATE "C")
-- rather than through the server locale, so that every comparison in the natural key
-- costs a memcmp whatever locale the server was initialised with. Equality, and so the
-- de-duplication key, is unchanged; the order is UTF-8 byte order (the order C.UTF-8
-- gives too).
--
-- TimescaleDB's default index on (time DESC) goes: no query reads samples by time
-- alone. Reads select a device and trip (the key's leading columns; the key's time column
-- then filters inside the index), time ranges are pruned by chunk, and retention drops
-- whole chunks. Maintaining it took about a third of the server's CPU per ingested row
-- and 28% of the WAL (1M GPS rows by binary COPY).
--
-- Both statements recurse into existing chunks; the key indexes are rebuilt once here.
ALTER TABLE gps_samples ALTER COLUMN device_id TYPE text COLLATE "C",
                        ALTER COLUMN trip_id TYPE text COLLATE "C";
ALTER TABLE imu_samples ALTER COLUMN device_id TYPE text COLLATE "C",
                        ALTER COLUMN trip_id TYPE text COLLATE "C";
ALTER TABLE obd_samples ALTER COLUMN device_id TYPE text COLLATE "C",
                        ALTER COLUMN trip_id TYPE text COLLATE "C";

DROP INDEX gps_samples_time_idx;
DROP INDEX imu_samples_time_idx;
DROP INDEX obd_samples_time_idx;
