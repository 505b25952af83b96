-- outpost hub schema, version 2: evidence (photos, recordings) uploaded by
-- devices whose sharing policy lets them go, in chunks.
CREATE TABLE evidence (
    device       text        NOT NULL,
    id           uuid        NOT NULL, -- the evidence record
    of           uuid        NOT NULL, -- the result it belongs to
    content_type text        NOT NULL,
    size         bigint      NOT NULL,
    sha256       text        NOT NULL,
    have         bigint      NOT NULL DEFAULT 0,
    complete     boolean     NOT NULL DEFAULT false,
    received     timestamptz NOT NULL,
    data         bytea       NOT NULL DEFAULT '',
    PRIMARY KEY (device, id)
);
CREATE INDEX evidence_of ON evidence (device, of);

-- Experts' reviews of results, sent back to the device that made them.
CREATE TABLE reviews (
    device    text        NOT NULL,
    of        uuid        NOT NULL, -- the result reviewed
    review    jsonb       NOT NULL,
    created   timestamptz NOT NULL,
    delivered boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (device, of)
);
