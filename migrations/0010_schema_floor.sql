-- compat: additive
-- 0010: the rollback floor (SPEC §8, docs/DEPLOY.md "Rolling back"). One row: the lowest schema
-- version a hearth binary must know (its own newest migration) to open this database.
-- `db::migrate` raises it to a migration's version when that migration is declared `breaking`
-- (its first line, `-- compat: breaking`); an `additive` migration leaves it where it was, so
-- the binary of the release before can still start on the database. 0 means any hearth that
-- reads this table may open it. Append-only.

CREATE TABLE schema_floor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    min_reader_version INTEGER NOT NULL
);
INSERT INTO schema_floor (id, min_reader_version) VALUES (1, 0);
