-- outpost hub schema, version 4: regional warnings (hub -> devices) and
-- which devices confirmed each one.
CREATE TABLE warnings (
    id      uuid        PRIMARY KEY,
    region  text        NOT NULL,
    until   timestamptz NOT NULL,
    issued  timestamptz NOT NULL,
    warning jsonb       NOT NULL
);
CREATE INDEX warnings_until ON warnings (until);
CREATE TABLE warning_deliveries (
    id     uuid        NOT NULL REFERENCES warnings (id) ON DELETE CASCADE,
    device text        NOT NULL,
    at     timestamptz NOT NULL,
    PRIMARY KEY (id, device)
);
