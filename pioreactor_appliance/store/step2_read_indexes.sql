-- Schema version 2: indexes for the log and time-series reads.
-- GET /api/logs pages through every log newest first; without this index each page sorts the whole table.
CREATE INDEX logs_by_time ON logs (timestamp DESC);
