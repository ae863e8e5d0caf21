# preload_sqlite: sqlite3 builds an in-memory database far larger than the
# budget and runs a query, compared with a plain run.
. "$(dirname "$0")/lib.sh"
need sqlite3
cat >"$WORK/work.sql" <<'SQLEOF'
PRAGMA cache_size = -1000000;
CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300000)
INSERT INTO t SELECT i, (i * 7919) % 1000, printf('%0100d', i) FROM c;
CREATE INDEX tk ON t(k);
SELECT k, count(*), sum(length(v)), max(id) FROM t WHERE k % 100 = 7 GROUP BY k ORDER BY k;
SQLEOF
run_plain sqlite sqlite3 :memory: ".read $WORK/work.sql"
run_paged sqlite 16M sqlite3 :memory: ".read $WORK/work.sql"
compare sqlite 16
