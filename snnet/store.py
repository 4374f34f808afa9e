"""What we know: an SQLite store of per-configuration metrics (and, later, fine-tune jobs).

Metrics are keyed by family, a content hash of the weights, the configuration id, the split and
the evaluation settings, so a changed checkpoint never gets stale numbers. SQLite in WAL mode lets
any number of readers (app pages) work beside one writer (a job).
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
"""
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
