"""The leader's MQTT -> SQLite ingest: the jobs' data and logs, stored as they are published."""
