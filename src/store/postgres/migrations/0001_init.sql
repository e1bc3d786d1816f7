-- tollgate store, version 1. Record values (`rec`) are the same versioned JSON the sled store
-- writes, secrets sealed; the other columns repeat what queries select on.

CREATE TABLE apps (
    org text NOT NULL,
    id text NOT NULL,
    incarnation bigint NOT NULL,
    generation bigint NOT NULL,
    rec text NOT NULL,
    PRIMARY KEY (org, id)
);

CREATE TABLE tokens (
    org text NOT NULL,
    app text NOT NULL,
    incarnation bigint NOT NULL,
    generation bigint NOT NULL,
    usr text NOT NULL,
    version bigint NOT NULL,
    rec text NOT NULL,
    lease_owner text,
    lease_until timestamptz,
    PRIMARY KEY (org, app, incarnation, generation, usr)
);

CREATE TABLE consent_tickets (
    hash bytea PRIMARY KEY,
    owner bytea NOT NULL UNIQUE,
    org text NOT NULL,
    app text NOT NULL,
    incarnation bigint NOT NULL,
    generation bigint NOT NULL,
    expires_at bigint NOT NULL,
    rec text NOT NULL
);
CREATE INDEX consent_tickets_app ON consent_tickets (org, app);

CREATE TABLE consent_pending (
    hash bytea PRIMARY KEY,
    org text NOT NULL,
    app text NOT NULL,
    incarnation bigint NOT NULL,
    generation bigint NOT NULL,
    expires_at bigint NOT NULL,
    rec text NOT NULL
);
CREATE INDEX consent_pending_app ON consent_pending (org, app);

CREATE SEQUENCE audit_seq;
CREATE TABLE audit (
    org text NOT NULL,
    seq bigint NOT NULL,
    rec text NOT NULL,
    PRIMARY KEY (org, seq)
);

CREATE TABLE agent_revocations (
    agent text PRIMARY KEY,
    rec text NOT NULL
);

CREATE TABLE meta (
    k text PRIMARY KEY,
    rec text NOT NULL
);

CREATE TABLE changes (
    seq bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    kind text NOT NULL,
    org text,
    app text,
    usr text,
    agent text
);
