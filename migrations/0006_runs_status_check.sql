-- 0006: the runs table's status CHECK written as equalities instead of `IN (…)`.
-- SQLite evaluates a constant `IN` list of more than two values by building a temporary b-tree
-- each time the statement runs, so the CHECK cost a temporary table on every insert and update
-- of a run: about 8 % of the instructions of a chat turn (callgrind, docs/PERFORMANCE.md). The
-- constraint accepts exactly the same values. SQLite cannot ALTER a CHECK; its documented
-- procedure for changing one (https://sqlite.org/lang_altertable.html, "making other kinds of
-- table schema changes") edits the stored CREATE TABLE text, which does not change the file
-- format. The migration runner then bumps `schema_version` so every connection re-reads it.

PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql,
'status            TEXT NOT NULL CHECK (status IN
                        (''queued'', ''claimed'', ''running'', ''completed'', ''failed'', ''cancelled'')),',
'status            TEXT NOT NULL CHECK (status = ''queued'' OR status = ''claimed''
                        OR status = ''running'' OR status = ''completed'' OR status = ''failed''
                        OR status = ''cancelled''),')
 WHERE type = 'table' AND name = 'runs';
PRAGMA writable_schema = OFF;
