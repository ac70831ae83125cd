"""The schema: the numbered migrations, tracked in SQLite's ``user_version``.

The schema is the sum of ``MIGRATIONS``, each applied in its own transaction. A store written before versions
were kept (user_version 0) is read off its columns; a store newer than this code is refused rather than
misread (``StoreVersionError``). The runs table's columns are the fields of ``RunRecord``
(``app/store/runs.py`` reads them by that name list).
"""

from __future__ import annotations

import sqlite3

from app.store.errors import StoreVersionError

# Each step moves the schema one version up; never edit a released step, append a new one.
MIGRATIONS: tuple[str, ...] = (
    # 1: the runs table
    """
    CREATE TABLE IF NOT EXISTS runs (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        name            TEXT NOT NULL UNIQUE,
        status          TEXT NOT NULL,
        config_name     TEXT NOT NULL,
        overrides       TEXT NOT NULL,
        run_dir         TEXT NOT NULL,
        gpu_need        INTEGER NOT NULL,
        seed            TEXT,
        created_at      REAL NOT NULL,
        started_at      REAL,
        finished_at     REAL,
        exit_code       INTEGER,
        reason          TEXT,
        log_tail        TEXT,
        gpus            TEXT NOT NULL DEFAULT '[]',
        handle          TEXT,
        rerun_of        TEXT,
        idempotency_key TEXT UNIQUE,
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, seq);
    CREATE TRIGGER IF NOT EXISTS terminal_is_final BEFORE UPDATE OF status ON runs
    WHEN OLD.status IN ('succeeded', 'failed', 'cancelled') AND NEW.status != OLD.status
    BEGIN SELECT RAISE(ABORT, 'terminal status is final'); END;
    """,
    # 2: each run records the launcher that started it
    "ALTER TABLE runs ADD COLUMN launcher TEXT;",
    # 3: the resource estimate made at submission (data bytes, parameter count, ...)
    "ALTER TABLE runs ADD COLUMN resources TEXT;",
    # 4: disk usage, and deleted runs (files gone, record kept)
    """
    ALTER TABLE runs ADD COLUMN disk_bytes INTEGER;
    ALTER TABLE runs ADD COLUMN deleted_at REAL;
    ALTER TABLE runs ADD COLUMN deleted_by TEXT;
    """,
    # 5: users and their tokens (hashes only), who owns and who cancelled a run
    """
    CREATE TABLE users (
        name        TEXT PRIMARY KEY,
        is_admin    INTEGER NOT NULL DEFAULT 0,
        token_hash  TEXT,
        created_at  REAL NOT NULL,
        revoked_at  REAL,
        max_gpus    INTEGER,
        max_queued  INTEGER,
        max_run_s   REAL
    );
    ALTER TABLE runs ADD COLUMN owner TEXT;
    ALTER TABLE runs ADD COLUMN cancelled_by TEXT;
    CREATE INDEX runs_by_owner ON runs (owner, status, seq);
    """,
    # 6: sweeps (app/sweeps.py): one row per sweep, and each run's sweep and place in it
    """
    CREATE TABLE sweeps (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        name            TEXT NOT NULL UNIQUE,
        owner           TEXT,
        config_name     TEXT NOT NULL,
        overrides       TEXT NOT NULL,
        swept           TEXT NOT NULL,
        size            INTEGER NOT NULL,
        run_dir         TEXT NOT NULL,
        created_at      REAL NOT NULL,
        idempotency_key TEXT UNIQUE
    );
    ALTER TABLE runs ADD COLUMN sweep TEXT;
    ALTER TABLE runs ADD COLUMN sweep_index INTEGER;
    CREATE INDEX runs_by_sweep ON runs (sweep, sweep_index) WHERE sweep IS NOT NULL;
    """,
    # 7: resume: a failed or cancelled run may go back to the queue as its next attempt; each finished
    # attempt is kept in ``attempts`` first, and the trigger allows exactly that move out of a final status.
    """
    ALTER TABLE runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE attempts (
        name        TEXT NOT NULL,
        attempt     INTEGER NOT NULL,
        status      TEXT NOT NULL,
        exit_code   INTEGER,
        reason      TEXT,
        log_tail    TEXT,
        started_at  REAL,
        finished_at REAL,
        PRIMARY KEY (name, attempt)
    );
    DROP TRIGGER terminal_is_final;
    CREATE TRIGGER terminal_is_final BEFORE UPDATE OF status ON runs
    WHEN OLD.status IN ('succeeded', 'failed', 'cancelled') AND NEW.status != OLD.status
         AND NOT (OLD.status IN ('failed', 'cancelled') AND NEW.status = 'queued'
                  AND NEW.attempts = OLD.attempts + 1)
    BEGIN SELECT RAISE(ABORT, 'terminal status is final'); END;
    """,
    # 8: the GPU guard (app/gpus/): processes an admin lets be on labrun's GPUs (by pid, or by command
    # pattern), Unix users mapped to labrun users, and the GPU time mapped users' own processes held
    # (their fair share counts it). New tables only.
    """
    CREATE TABLE gpu_ignores (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        pid         INTEGER,
        pid_start   TEXT,
        pattern     TEXT,
        note        TEXT,
        created_by  TEXT,
        created_at  REAL NOT NULL
    );
    CREATE TABLE unix_users (
        unix_user   TEXT PRIMARY KEY,
        owner       TEXT NOT NULL,
        created_at  REAL NOT NULL
    );
    CREATE TABLE gpu_outside_use (
        gpu         INTEGER NOT NULL,
        pid         INTEGER NOT NULL,
        pid_start   TEXT NOT NULL,
        unix_user   TEXT NOT NULL,
        owner       TEXT NOT NULL,
        first_seen  REAL NOT NULL,
        last_seen   REAL NOT NULL,
        PRIMARY KEY (gpu, pid, pid_start)
    );
    CREATE INDEX gpu_outside_use_by_time ON gpu_outside_use (last_seen);
    """,
    # 9: the server's default overrides each run got (app/defaults.py), a run's own stall limit and a
    # user's (app/lifecycle/stalls.py)
    """
    ALTER TABLE runs ADD COLUMN default_overrides TEXT;
    ALTER TABLE runs ADD COLUMN stall_after_s REAL;
    ALTER TABLE users ADD COLUMN stall_after_s REAL;
    """,
    # 10: notifications (app/notify/): the outbox of events, written by triggers in the very transaction
    # that moves a run to a final status (whatever path ends it); each user's destinations (URLs kept
    # encrypted), default events and per-run/per-sweep choices; one delivery row per event and destination.
    # New tables and triggers only.
    """
    CREATE TABLE events (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        id          TEXT NOT NULL UNIQUE DEFAULT (lower(hex(randomblob(16)))),
        kind        TEXT NOT NULL,
        subject     TEXT NOT NULL,
        owner       TEXT,
        created_at  REAL NOT NULL,
        body        TEXT NOT NULL,
        fanned_out  INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX events_to_fan_out ON events (seq) WHERE fanned_out = 0;
    CREATE TRIGGER run_ended_event AFTER UPDATE OF status ON runs
    WHEN NEW.status IN ('succeeded', 'failed', 'cancelled') AND OLD.status != NEW.status
    BEGIN
        INSERT INTO events (kind, subject, owner, created_at, body) VALUES (
            NEW.status, NEW.name, NEW.owner, COALESCE(NEW.finished_at, (julianday('now') - 2440587.5) * 86400.0),
            json_object('run', NEW.name, 'status', NEW.status, 'owner', NEW.owner, 'reason', NEW.reason,
                        'exit_code', NEW.exit_code, 'log_tail', NEW.log_tail, 'cancelled_by', NEW.cancelled_by,
                        'config_name', NEW.config_name, 'run_dir', NEW.run_dir, 'created_at', NEW.created_at,
                        'started_at', NEW.started_at, 'finished_at', NEW.finished_at, 'sweep', NEW.sweep,
                        'attempt', NEW.attempts));
    END;
    CREATE TRIGGER sweep_ended_event AFTER UPDATE OF status ON runs
    WHEN NEW.sweep IS NOT NULL AND NEW.status IN ('succeeded', 'failed', 'cancelled')
         AND OLD.status != NEW.status
         AND NOT EXISTS (SELECT 1 FROM runs WHERE sweep = NEW.sweep
                         AND status NOT IN ('succeeded', 'failed', 'cancelled'))
    BEGIN
        INSERT INTO events (kind, subject, owner, created_at, body) VALUES (
            'sweep_finished', NEW.sweep, NEW.owner, COALESCE(NEW.finished_at, (julianday('now') - 2440587.5) * 86400.0),
            json_object(
                'sweep', NEW.sweep, 'owner', NEW.owner,
                'counts', (SELECT json_group_object(status, n) FROM
                           (SELECT status, COUNT(*) AS n FROM runs WHERE sweep = NEW.sweep GROUP BY status)),
                'runs', (SELECT json_group_array(json_object('run', name, 'status', status, 'reason', reason,
                                                             'run_dir', run_dir))
                         FROM (SELECT name, status, reason, run_dir FROM runs WHERE sweep = NEW.sweep
                               ORDER BY sweep_index, seq))));
    END;
    CREATE TABLE notify_destinations (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        owner       TEXT NOT NULL,
        kind        TEXT NOT NULL,
        label       TEXT NOT NULL,
        sealed      BLOB NOT NULL,
        created_at  REAL NOT NULL,
        failures    INTEGER NOT NULL DEFAULT 0,
        last_error  TEXT,
        last_error_at REAL,
        last_sent_at REAL,
        paused_at   REAL
    );
    CREATE INDEX notify_destinations_by_owner ON notify_destinations (owner);
    CREATE TABLE notify_defaults (
        owner       TEXT PRIMARY KEY,
        events      TEXT NOT NULL
    );
    CREATE TABLE notify_choices (
        subject     TEXT PRIMARY KEY,
        events      TEXT NOT NULL
    );
    CREATE TABLE deliveries (
        event       INTEGER NOT NULL,
        destination INTEGER NOT NULL,
        state       TEXT NOT NULL DEFAULT 'pending',
        tries       INTEGER NOT NULL DEFAULT 0,
        next_at     REAL NOT NULL,
        last_error  TEXT,
        done_at     REAL,
        PRIMARY KEY (event, destination)
    );
    CREATE INDEX deliveries_due ON deliveries (next_at) WHERE state = 'pending';
    """,
    # 11: what each run was asked, one row per key (app/store/run_overrides.py), for GET /runs?override=;
    # the runs stored before it are filled in at start-up, newest first (``below``: those left to do)
    """
    CREATE TABLE run_overrides (
        key         TEXT NOT NULL,
        value_norm  TEXT NOT NULL,
        run         INTEGER NOT NULL,
        PRIMARY KEY (key, value_norm, run)
    ) WITHOUT ROWID;
    CREATE TABLE run_overrides_backfill (below INTEGER NOT NULL);
    INSERT INTO run_overrides_backfill SELECT COALESCE(MAX(seq), 0) + 1 FROM runs;
    """,
    # 12: priority classes and preemption (docs/priorities.md): each run's class, a preemption under way
    # (the waiting run's class), and each user's allowance of high-priority GPUs. New columns only.
    """
    ALTER TABLE runs ADD COLUMN priority TEXT NOT NULL DEFAULT 'normal';
    ALTER TABLE runs ADD COLUMN preempted_by TEXT;
    ALTER TABLE users ADD COLUMN high_gpus INTEGER;
    """,
    # 13: the "preempted" and "resumed" events (app/notify/events.py), written in the transaction that
    # requeues a victim (RunStore.requeue_preempted: running -> queued, the ended attempt kept as
    # "preempted") and in the one that starts its next attempt. New triggers only.
    """
    CREATE TRIGGER run_preempted_event AFTER UPDATE OF status ON runs
    WHEN OLD.status = 'running' AND NEW.status = 'queued'
         AND EXISTS (SELECT 1 FROM attempts WHERE name = NEW.name AND attempt = OLD.attempts
                     AND status = 'preempted')
    BEGIN
        INSERT INTO events (kind, subject, owner, created_at, body)
        SELECT 'preempted', NEW.name, NEW.owner, COALESCE(a.finished_at, (julianday('now') - 2440587.5) * 86400.0),
            json_object('run', NEW.name, 'status', 'preempted', 'owner', NEW.owner, 'reason', a.reason,
                        'exit_code', a.exit_code, 'config_name', NEW.config_name, 'run_dir', NEW.run_dir,
                        'created_at', NEW.created_at, 'started_at', a.started_at, 'finished_at', a.finished_at,
                        'sweep', NEW.sweep, 'attempt', a.attempt, 'priority', NEW.priority)
        FROM attempts a WHERE a.name = NEW.name AND a.attempt = OLD.attempts;
    END;
    CREATE TRIGGER run_resumed_event AFTER UPDATE OF status ON runs
    WHEN OLD.status = 'queued' AND NEW.status = 'running' AND NEW.attempts > 1
         AND EXISTS (SELECT 1 FROM attempts WHERE name = NEW.name AND attempt = NEW.attempts - 1
                     AND status = 'preempted')
    BEGIN
        INSERT INTO events (kind, subject, owner, created_at, body)
        SELECT 'resumed', NEW.name, NEW.owner, COALESCE(NEW.started_at, (julianday('now') - 2440587.5) * 86400.0),
            json_object('run', NEW.name, 'status', 'resumed', 'owner', NEW.owner, 'reason', a.reason,
                        'config_name', NEW.config_name, 'run_dir', NEW.run_dir, 'created_at', NEW.created_at,
                        'started_at', NEW.started_at, 'sweep', NEW.sweep, 'attempt', NEW.attempts,
                        'priority', NEW.priority)
        FROM attempts a WHERE a.name = NEW.name AND a.attempt = NEW.attempts - 1;
    END;
    """,
    # 14: time limits (docs/time-limits.md): a run's own limit on its running time over all its attempts,
    # and the running time of its attempts before the current one (added where an attempt is kept).
    # A run stopped at its time limit sends "time_limit_reached" instead of "cancelled" (its reason says so:
    # app/lifecycle/timekeeper.py), so the run-ended trigger is made again with that one difference.
    """
    ALTER TABLE runs ADD COLUMN time_limit_s REAL;
    ALTER TABLE runs ADD COLUMN ran_s REAL NOT NULL DEFAULT 0;
    DROP TRIGGER run_ended_event;
    CREATE TRIGGER run_ended_event AFTER UPDATE OF status ON runs
    WHEN NEW.status IN ('succeeded', 'failed', 'cancelled') AND OLD.status != NEW.status
    BEGIN
        INSERT INTO events (kind, subject, owner, created_at, body) VALUES (
            CASE WHEN NEW.status = 'cancelled' AND NEW.reason LIKE 'time limit of % reached%'
                 THEN 'time_limit_reached' ELSE NEW.status END,
            NEW.name, NEW.owner, COALESCE(NEW.finished_at, (julianday('now') - 2440587.5) * 86400.0),
            json_object('run', NEW.name, 'status', NEW.status, 'owner', NEW.owner, 'reason', NEW.reason,
                        'exit_code', NEW.exit_code, 'log_tail', NEW.log_tail, 'cancelled_by', NEW.cancelled_by,
                        'config_name', NEW.config_name, 'run_dir', NEW.run_dir, 'created_at', NEW.created_at,
                        'started_at', NEW.started_at, 'finished_at', NEW.finished_at, 'sweep', NEW.sweep,
                        'attempt', NEW.attempts, 'time_limit_s', NEW.time_limit_s));
    END;
    """,
    # 15: run chains (docs/run-chains.md): what a run waits for (``after``: a JSON list of {"run"|"sweep",
    # "when"}) and the run whose checkpoint it starts from (``init_from``). The partial index keeps the
    # dispatcher's look at the runs that wait as cheap as the number of such runs. New columns only.
    """
    ALTER TABLE runs ADD COLUMN after TEXT;
    ALTER TABLE runs ADD COLUMN init_from TEXT;
    CREATE INDEX runs_waiting ON runs (status) WHERE after IS NOT NULL;
    """,
    # 16: GPU-hour budgets (docs/budgets-and-estimates.md): a user's own budgets (NULL: the server's), and
    # indexes that let the budget ledger read only the attempts that ended since it last looked.
    """
    ALTER TABLE users ADD COLUMN budget_gpu_hours REAL;
    ALTER TABLE users ADD COLUMN budget_cpu_hours REAL;
    CREATE INDEX runs_by_finished_at ON runs (finished_at) WHERE finished_at IS NOT NULL;
    CREATE INDEX attempts_by_finished_at ON attempts (finished_at);
    """,
    # 17: reservations (docs/reservations.md): GPUs booked for a window [start_at, end_at) for some users,
    # the notices told of each (so a restart tells none twice), and each user's grant of them. New tables only.
    """
    CREATE TABLE reservations (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        owner       TEXT NOT NULL,
        users       TEXT NOT NULL,
        gpus        TEXT NOT NULL,
        start_at    REAL NOT NULL,
        end_at      REAL NOT NULL,
        created_at  REAL NOT NULL,
        ended_at    REAL,
        ended_by    TEXT,
        note        TEXT,
        told        TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX reservations_by_end ON reservations (end_at);
    CREATE TABLE reservation_grants (
        name        TEXT PRIMARY KEY,
        gpu_hours   REAL,
        max_window_s REAL,
        ahead_s     REAL
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    """The store's schema version. Stores written before versions were kept (user_version 0) are read off
    their columns: the migrations they had are exactly those whose columns exist."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version:
        return version
    columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    if not columns:
        return 0
    return 2 if "launcher" in columns else 1


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the store up to SCHEMA_VERSION, one step per transaction; returns the version it found."""
    found = schema_version(conn)
    if found > SCHEMA_VERSION:
        raise StoreVersionError(
            f"the store {_path(conn)} has schema version {found}, newer than this labrun knows "
            f"({SCHEMA_VERSION}): it was written by a newer labrun. Upgrade labrun, or set "
            "LABRUN_OUTPUT_DIR to another directory"
        )
    for version in range(found + 1, SCHEMA_VERSION + 1):
        conn.executescript(f"BEGIN; {MIGRATIONS[version - 1]} PRAGMA user_version = {version}; COMMIT;")
    if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:  # an unversioned, current store
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return found


def _path(conn: sqlite3.Connection) -> str:
    row = conn.execute("PRAGMA database_list").fetchone()
    return str(row[2]) if row else "?"
