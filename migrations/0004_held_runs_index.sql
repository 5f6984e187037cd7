-- 0004: one partial index for the runs workers hold, instead of two (by worker, by lease).
-- A run taken at dispatch is inserted running and finished a moment later, so every index of
-- held runs costs an insert and a delete per turn. The give-back (by worker) and the lease
-- sweep (scans held runs, few: bounded by the workers' capacity) both read this one.

DROP INDEX runs_by_worker;
DROP INDEX runs_by_lease;
CREATE INDEX runs_held ON runs (claimed_by, lease_expires_at) WHERE status IN ('claimed', 'running');
