"""The ``run_overrides`` table: one row per (run, key, value) a run was asked, for finding runs by what they
were asked (``GET /runs?override=model=fno``) without reading every run's JSON.

Rows are written with the run, in its insert transaction (``RunStore.insert_runs``); runs stored before the
table existed are filled in at start-up (``backfill``), newest first and a batch per transaction, so a kill
midway loses nothing: ``run_overrides_backfill.below`` says which runs are left. Values are normalised by
``app/override_values.py`` (1e-4 and 0.0001 are one value); the primary key (key, value_norm, run) is the
index a filter reads, newest run first.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from app.store.db import Database

INSERT = "INSERT OR IGNORE INTO run_overrides (key, value_norm, run) VALUES (?, ?, ?)"
BACKFILL_BATCH = 5000


def write(
    conn: sqlite3.Connection, seq: int, overrides: Sequence[str], defaults: Sequence[str] | None
) -> None:
    """The rows of one run, in the caller's transaction."""
    from app.override_values import asked  # Hydra's parser: only when runs are written

    conn.executemany(INSERT, [(key, value, seq) for key, value in asked(overrides, defaults)])


def matching(filters: Sequence[tuple[str, str]]) -> tuple[str, list[str]]:
    """SQL conditions on ``runs.seq`` (ANDed): the run was asked every (key, value_norm)."""
    clause = "seq IN (SELECT run FROM run_overrides WHERE key = ? AND value_norm = ?)"
    params = [p for pair in filters for p in pair]
    return " AND ".join([clause] * len(filters)), params


def backfill(db: Database) -> int:
    """Fill in the rows of runs stored before the table existed; how many runs were read."""
    done = 0
    while True:
        row = db.one("SELECT below FROM run_overrides_backfill")
        if row is None:
            return done
        below = int(row[0])
        sql = "SELECT seq, overrides, default_overrides FROM runs WHERE seq < ? ORDER BY seq DESC LIMIT ?"
        runs = list(db.rows(sql, (below, BACKFILL_BATCH)))
        with db.transaction() as conn:
            for seq, overrides, defaults in runs:
                write(conn, seq, _json_list(overrides), _json_list(defaults))
            if len(runs) < BACKFILL_BATCH:
                conn.execute("DELETE FROM run_overrides_backfill")
            else:
                conn.execute("UPDATE run_overrides_backfill SET below = ?", (runs[-1][0],))
        done += len(runs)


def _json_list(text: str | None) -> list[str]:
    value = json.loads(text) if text else None
    return [str(v) for v in value] if isinstance(value, list) else []
