-- outpost hub schema, version 5: commits never wait on one another for the
-- running count. A single counter row serialised every commit on its row
-- lock, so several commits in flight (one collector pipelining, or three
-- collectors) queued behind it; each commit now appends its count, and
-- Count sums (and folds) the rows.
CREATE TABLE result_counts (n bigint NOT NULL);
INSERT INTO result_counts (n) SELECT n FROM result_count;
DROP TABLE result_count;
