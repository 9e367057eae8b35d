-- The exporter's "last hour" query needs the newest rows fast whatever the physical order: a B-tree
-- on ts stays exact where a BRIN index falls back to scanning unsummarized ranges after bulk writes.
DROP INDEX IF EXISTS ledger_ts_brin;
CREATE INDEX ledger_ts_idx ON ledger (ts);
