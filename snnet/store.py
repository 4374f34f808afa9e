"""What we know: an SQLite store of per-configuration metrics, anchor costs and background jobs.

Metrics are keyed by family, a content hash of the weights, the configuration id, the split and
the evaluation settings, so a changed checkpoint never gets stale numbers. SQLite in WAL mode lets
any number of readers (app pages) work beside one writer (a job).

Jobs (fine-tunes, evaluations, evolve searches) are rows that a worker process claims and updates;
their progress is a table of (step, loss) points, and an evolve search's a table of the networks it
measured, so a page that reloads, or a second browser, sees the same state.
"""
import json
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Optional

SCHEMA = """
CREATE TABLE IF NOT EXISTS metrics (
    family TEXT NOT NULL, weights TEXT NOT NULL, split TEXT NOT NULL, settings TEXT NOT NULL,
    stitch_id INTEGER NOT NULL, top1 REAL, top5 REAL, loss REAL, latency_ms REAL, created REAL,
    PRIMARY KEY (family, weights, split, settings, stitch_id)
);
CREATE TABLE IF NOT EXISTS zoo (
    family TEXT NOT NULL, name TEXT NOT NULL, split TEXT NOT NULL, weights TEXT,
    gmacs REAL, params_m REAL, top1 REAL, top5 REAL, latency_ms REAL, source TEXT,
    PRIMARY KEY (family, name, split)
);
CREATE TABLE IF NOT EXISTS costs (
    key TEXT PRIMARY KEY, family TEXT NOT NULL, costs TEXT NOT NULL, created REAL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, family TEXT NOT NULL,
    device TEXT NOT NULL, spec TEXT NOT NULL, status TEXT NOT NULL, pid INTEGER,
    step INTEGER DEFAULT 0, steps INTEGER DEFAULT 0, loss REAL, eta_s REAL, stage TEXT,
    message TEXT, result TEXT, cancel INTEGER DEFAULT 0, created REAL, started REAL, finished REAL
);
CREATE TABLE IF NOT EXISTS job_progress (
    job_id INTEGER NOT NULL, step INTEGER NOT NULL, loss REAL, time REAL,
    PRIMARY KEY (job_id, step)
);
CREATE TABLE IF NOT EXISTS evolve_points (
    job_id INTEGER NOT NULL, genotype TEXT NOT NULL, error REAL NOT NULL, gmacs REAL NOT NULL,
    is_parent INTEGER NOT NULL, test_error REAL, seq INTEGER NOT NULL, time REAL,
    PRIMARY KEY (job_id, genotype)
);
"""
JOB_UPDATABLE = ("status", "pid", "step", "steps", "loss", "eta_s", "stage", "message", "result", "started", "finished")
METRIC_FIELDS = ("top1", "top5", "loss", "latency_ms")
ZOO_FIELDS = ("weights", "gmacs", "params_m", "top1", "top5", "latency_ms", "source")


def default_path() -> Path:
    return Path(os.environ.get("SNNET_HOME", Path.home() / ".cache" / "snnet")) / "store.sqlite"


def settings_key(**settings) -> str:
    """Evaluation settings as a canonical string: equal settings, equal key."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))


class Store:
    def __init__(self, path: Optional[Path] = None):
        self.path = Path(path or default_path())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=30)
        connection.row_factory = sqlite3.Row
        return connection

    def put_metrics(self, family: str, weights: str, split: str, settings: str, rows: dict[int, dict]) -> None:
        now = time.time()
        with closing(self._connect()) as connection, connection:
            connection.executemany(
                "INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(family, weights, split, settings, int(stitch_id), *(row.get(f) for f in METRIC_FIELDS), now)
                 for stitch_id, row in rows.items()],
            )

    def get_metrics(self, family: str, weights: str, split: str, settings: str) -> dict[int, dict]:
        with closing(self._connect()) as connection:
            cursor = connection.execute(
                "SELECT * FROM metrics WHERE family=? AND weights=? AND split=? AND settings=?",
                (family, weights, split, settings))
            return {row["stitch_id"]: {f: row[f] for f in METRIC_FIELDS} for row in cursor}

    def put_zoo(self, family: str, split: str, rows: list[dict]) -> None:
        with closing(self._connect()) as connection, connection:
            connection.executemany(
                "INSERT OR REPLACE INTO zoo VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(family, row["name"], split, *(row.get(f) for f in ZOO_FIELDS)) for row in rows],
            )

    def get_zoo(self, family: str, split: str) -> list[dict]:
        with closing(self._connect()) as connection:
            cursor = connection.execute("SELECT * FROM zoo WHERE family=? AND split=? ORDER BY gmacs",
                                        (family, split))
            return [{"name": row["name"], **{f: row[f] for f in ZOO_FIELDS}} for row in cursor]

    def put_costs(self, key: str, family: str, costs: list) -> None:
        """Measured per-piece costs of a family's anchors, under a key of their architectures."""
        with closing(self._connect()) as connection, connection:
            connection.execute("INSERT OR REPLACE INTO costs VALUES (?, ?, ?, ?)",
                               (key, family, json.dumps(costs), time.time()))

    def get_costs(self, key: str) -> Optional[list]:
        with closing(self._connect()) as connection:
            row = connection.execute("SELECT costs FROM costs WHERE key=?", (key,)).fetchone()
        return json.loads(row["costs"]) if row else None

    def add_job(self, kind: str, family: str, device: str, spec: dict, steps: int = 0) -> int:
        with closing(self._connect()) as connection, connection:
            cursor = connection.execute(
                "INSERT INTO jobs (kind, family, device, spec, status, steps, stage, created) "
                "VALUES (?, ?, ?, ?, 'queued', ?, 'waiting for the device', ?)",
                (kind, family, device, json.dumps(spec), steps, time.time()))
            return int(cursor.lastrowid)

    def claim_next_job(self, device: str) -> Optional[dict]:
        """The oldest queued job of a device, now running, unless a job already runs there."""
        with closing(self._connect()) as connection:
            connection.isolation_level = None
            connection.execute("BEGIN IMMEDIATE")  # one claimant at a time, across processes
            try:
                busy = connection.execute("SELECT 1 FROM jobs WHERE device=? AND status='running'", (device,)).fetchone()
                row = None if busy else connection.execute(
                    "SELECT id FROM jobs WHERE device=? AND status='queued' ORDER BY id LIMIT 1", (device,)).fetchone()
                if row is not None:
                    connection.execute("UPDATE jobs SET status='running', stage='starting', started=? WHERE id=?",
                                       (time.time(), row["id"]))
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        return None if row is None else self.get_job(row["id"])

    def update_job(self, job_id: int, **fields) -> None:
        unknown = set(fields) - set(JOB_UPDATABLE)
        if unknown:
            raise ValueError(f"jobs have no field(s) {sorted(unknown)}")
        if "result" in fields:
            fields["result"] = json.dumps(fields["result"])
        columns = ", ".join(f"{name}=?" for name in fields)
        with closing(self._connect()) as connection, connection:
            connection.execute(f"UPDATE jobs SET {columns} WHERE id=?", (*fields.values(), job_id))

    def request_cancel(self, job_id: int) -> None:
        """A queued job is cancelled at once; a running one stops at its next step."""
        with closing(self._connect()) as connection, connection:
            connection.execute("UPDATE jobs SET cancel=1 WHERE id=?", (job_id,))
            connection.execute("UPDATE jobs SET status='cancelled', stage='cancelled', finished=? "
                               "WHERE id=? AND status='queued'", (time.time(), job_id))

    def requeue_job(self, job_id: int) -> bool:
        """Queue a failed or cancelled job again, keeping its id, spec and progress; False (and no
        change) for a job in any other state, so two clicks on Resume queue it once."""
        with closing(self._connect()) as connection, connection:
            cursor = connection.execute(
                "UPDATE jobs SET status='queued', stage='waiting for the device', cancel=0, pid=NULL, "
                "message=NULL, result=NULL, eta_s=NULL, started=NULL, finished=NULL "
                "WHERE id=? AND status IN ('failed', 'cancelled')", (job_id,))
            return cursor.rowcount == 1

    def get_job(self, job_id: int) -> Optional[dict]:
        with closing(self._connect()) as connection:
            row = connection.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def list_jobs(self, family: Optional[str] = None) -> list[dict]:
        with closing(self._connect()) as connection:
            query, args = "SELECT * FROM jobs", ()
            if family is not None:
                query, args = query + " WHERE family=?", (family,)
            return [_job(row) for row in connection.execute(query + " ORDER BY id DESC", args)]

    def add_progress(self, job_id: int, step: int, loss: float) -> None:
        with closing(self._connect()) as connection, connection:
            connection.execute("INSERT OR REPLACE INTO job_progress VALUES (?, ?, ?, ?)",
                               (job_id, step, loss, time.time()))

    def get_progress(self, job_id: int) -> list[dict]:
        with closing(self._connect()) as connection:
            cursor = connection.execute("SELECT step, loss, time FROM job_progress WHERE job_id=? ORDER BY step",
                                        (job_id,))
            return [dict(row) for row in cursor]

    def add_evolve_point(self, job_id: int, genotype: list[int], error: float, gmacs: float, is_parent: bool) -> None:
        """One network an evolve search measured (its genotype an active key), numbered in order."""
        with closing(self._connect()) as connection, connection:
            connection.execute(
                "INSERT OR REPLACE INTO evolve_points (job_id, genotype, error, gmacs, is_parent, seq, time) "
                "VALUES (?, ?, ?, ?, ?, (SELECT COUNT(*) FROM evolve_points WHERE job_id=?), ?)",
                (job_id, json.dumps(list(genotype)), error, gmacs, int(is_parent), job_id, time.time()))

    def set_evolve_test_error(self, job_id: int, genotype: list[int], test_error: float) -> None:
        with closing(self._connect()) as connection, connection:
            connection.execute("UPDATE evolve_points SET test_error=? WHERE job_id=? AND genotype=?",
                               (test_error, job_id, json.dumps(list(genotype))))

    def get_evolve_points(self, job_id: int) -> list[dict]:
        """A search's measured networks in the order they were measured."""
        with closing(self._connect()) as connection:
            cursor = connection.execute("SELECT genotype, error, gmacs, is_parent, test_error FROM evolve_points "
                                        "WHERE job_id=? ORDER BY seq", (job_id,))
            return [{**dict(row), "genotype": json.loads(row["genotype"]), "is_parent": bool(row["is_parent"])}
                    for row in cursor]

    def clear_evolve_points(self, job_id: int) -> None:
        """A search that starts again (resumed) measures everything again."""
        with closing(self._connect()) as connection, connection:
            connection.execute("DELETE FROM evolve_points WHERE job_id=?", (job_id,))


def _job(row: sqlite3.Row) -> dict:
    job = dict(row)
    job["spec"] = json.loads(job["spec"])
    job["result"] = json.loads(job["result"]) if job["result"] else None
    job["cancel"] = bool(job["cancel"])
    return job
