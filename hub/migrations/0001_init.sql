-- outpost hub schema, version 1.
CREATE TABLE results (
    device   text        NOT NULL,
    id       uuid        NOT NULL,
    seq      bigint      NOT NULL,
    created  timestamptz NOT NULL, -- device clock
    received timestamptz NOT NULL, -- hub clock
    day      date        NOT NULL, -- received, UTC: for per-day counts
    model    text        NOT NULL,
    version  text        NOT NULL,
    task     text        NOT NULL,
    label    text,                 -- output's "label", when it has one
    record   bytea       NOT NULL, -- the record as the device encoded it
    PRIMARY KEY (device, id)
);
-- The hub page and exports: by device and time; by model, label and day.
CREATE INDEX results_device_received ON results (device, received);
CREATE INDEX results_model_label_day ON results (model, label, day);

CREATE TABLE devices (
    device text  PRIMARY KEY,
    status jsonb NOT NULL
);

CREATE TABLE collectors (
    name      text PRIMARY KEY,
    client_id text NOT NULL UNIQUE
);
