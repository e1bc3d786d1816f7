-- tollgate store, version 2: the replicas table (issue 14). A row lives until `expires_at`,
-- judged by the database clock; every heartbeat moves it.

CREATE TABLE replicas (
    id text PRIMARY KEY,
    relay text,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
