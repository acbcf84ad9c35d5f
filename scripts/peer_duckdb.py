#!/usr/bin/env python3
"""Peer for `rliv bench replay`: the same label join and pair counters as one
DuckDB SQL query over the same JSONL files (batch, no event-time semantics:
every action within the window is attributed, late/orphan are not tracked).

    pip install duckdb
    python3 scripts/peer_duckdb.py DIR_WITH_exposures.jsonl_AND_actions.jsonl [--threads N]

Prints events/s over the input lines, like `rliv bench replay`.
"""
import argparse
import os
import sys
import time

try:
    import duckdb
except ImportError:
    sys.exit("duckdb is not installed: pip install duckdb")

ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--window-ms", type=int, default=1_800_000)
args = ap.parse_args()
exp = os.path.join(args.dir, "exposures.jsonl")
act = os.path.join(args.dir, "actions.jsonl")

con = duckdb.connect()
con.execute(f"SET threads = {args.threads}")
t0 = time.time()
lines = con.execute(
    f"""
    SELECT (SELECT count(*) FROM read_json('{exp}', format='newline_delimited', ignore_errors=true))
         + (SELECT count(*) FROM read_json('{act}', format='newline_delimited', ignore_errors=true))
    """
).fetchone()[0]
t_count = time.time() - t0

t0 = time.time()
con.execute(
    f"""
CREATE TABLE pairs AS
WITH e AS (
  SELECT DISTINCT ON (request_id, item_id) request_id, item_id, user_id, author_id, ts_ms
  FROM read_json('{exp}', format='newline_delimited', ignore_errors=true,
       columns={{request_id:'UBIGINT', user_id:'UBIGINT', item_id:'UBIGINT', author_id:'UBIGINT', ts_ms:'BIGINT'}})
  ORDER BY request_id, item_id, ts_ms
),
a AS (
  SELECT DISTINCT request_id, item_id, user_id, ts_ms, action, coalesce(value, 1.0) AS value
  FROM read_json('{act}', format='newline_delimited', ignore_errors=true,
       columns={{request_id:'UBIGINT', user_id:'UBIGINT', item_id:'UBIGINT', ts_ms:'BIGINT', action:'VARCHAR', value:'DOUBLE'}})
),
labeled AS (
  SELECT e.user_id, e.author_id, e.ts_ms,
         max(CASE WHEN a.action = 'click' THEN 1 ELSE 0 END) AS click,
         coalesce(sum(CASE WHEN a.action = 'watch' THEN a.value END), 0) AS watch,
         max(CASE WHEN a.action = 'follow' THEN 1 ELSE 0 END) AS follow,
         coalesce(sum(CASE WHEN a.action = 'gift' THEN a.value END), 0) AS gift
  FROM e LEFT JOIN a
    ON a.request_id = e.request_id AND a.item_id = e.item_id AND a.user_id = e.user_id
   AND a.ts_ms BETWEEN e.ts_ms AND e.ts_ms + {args.window_ms}
  GROUP BY e.request_id, e.item_id, e.user_id, e.author_id, e.ts_ms
)
SELECT user_id, author_id, count(*) AS exposures,
       count(*) FILTER (WHERE click > 0) AS clicks,
       count(*) FILTER (WHERE watch > 0) AS watches,
       count(*) FILTER (WHERE follow > 0) AS follows,
       count(*) FILTER (WHERE gift > 0) AS gifts,
       sum(watch) AS watch_sec_total, sum(gift) AS gift_total,
       min(ts_ms) AS first_ts_ms, max(ts_ms) AS last_ts_ms
FROM labeled GROUP BY user_id, author_id
"""
)
dt = time.time() - t0
pairs = con.execute("SELECT count(*) FROM pairs").fetchone()[0]
totals = con.execute(
    "SELECT sum(exposures), sum(clicks), sum(watches), sum(follows), sum(gifts), "
    "round(sum(watch_sec_total), 1), round(sum(gift_total), 1) FROM pairs"
).fetchone()
print(
    f"duckdb {duckdb.__version__}: {lines} input events, {args.threads} threads, "
    f"join + pair counters in {dt:.2f} s = {lines / dt:.0f} events/s, {pairs} pairs "
    f"(line count pass: {t_count:.2f} s, not included)"
)
print(f"totals (exposures, clicks, watches, follows, gifts, watch_sec, gift): {totals}")
