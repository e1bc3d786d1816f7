-- tollgate store, version 3: retention. Audit events get their time as a column (filled from
-- the record for the existing ones; a row written by an older build during a rolling upgrade
-- has none, and pruning reads it from the record), and both logs an index on their time.

ALTER TABLE audit ADD COLUMN at bigint;
UPDATE audit SET at = (rec::jsonb ->> 'at')::bigint;
CREATE INDEX audit_at ON audit (at);
CREATE INDEX changes_at ON changes (at);
