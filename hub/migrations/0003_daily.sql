-- outpost hub schema, version 3: the hub page reads aggregates and an
-- index, never every result (a page view scanned the whole store before).
-- Diagnoses per UTC day, device, model and label, kept by every commit.
CREATE TABLE daily_counts (
    day    date   NOT NULL,
    device text   NOT NULL,
    model  text   NOT NULL,
    label  text   NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (day, device, model, label)
);
INSERT INTO daily_counts (day, device, model, label, n)
    SELECT day, device, model, label, count(*) FROM results WHERE label IS NOT NULL
    GROUP BY day, device, model, label;
-- The newest results first, with or without a device.
CREATE INDEX results_received ON results (received DESC);
-- A running count: count(*) over a year of results is a full scan.
CREATE TABLE result_count (one boolean PRIMARY KEY DEFAULT true CHECK (one), n bigint NOT NULL);
INSERT INTO result_count (n) SELECT count(*) FROM results;
