"""The trade journal: one SQLite file (WAL mode, owner-only) holding everything a session did.

Tables: ``meta`` (what the session trades and how), ``candles`` (every candle seen, with how it was
used: warmup, traded, missed, late), ``decisions`` (at most one per candle: the primary key is what
stops a restarted session from deciding twice), ``orders`` (live orders by client order id),
``fills``, ``marks`` (the account after each candle), ``levels`` (its position level then: 0 flat,
0.5 half, 1 long) and ``events`` (duplicates, gaps, network errors, rejections, restarts...). Each
candle is written in one transaction, so a crash leaves the journal as it was after the last whole
candle.

``levels`` is a table of its own, not a column of ``marks``, so the tables of journals written before
half positions keep their schema; their marks have no level, and every position then was all-in
(``mark_level``).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nexlify.errors import ConfigError
from nexlify.trading.account import Account, Fill

SCHEMA_VERSION = 1
OWNER_ONLY = 0o600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS candles (
    ts INTEGER PRIMARY KEY, open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL,
    close REAL NOT NULL, volume REAL NOT NULL, kind TEXT NOT NULL, received_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    candle_ts INTEGER PRIMARY KEY, action TEXT NOT NULL, decided_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    client_id TEXT PRIMARY KEY, candle_ts INTEGER NOT NULL, side TEXT NOT NULL, amount REAL NOT NULL,
    status TEXT NOT NULL, exchange_order_id TEXT, filled REAL NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT '', created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS fills (
    id INTEGER PRIMARY KEY AUTOINCREMENT, candle_ts INTEGER NOT NULL, client_id TEXT, side TEXT NOT NULL,
    units REAL NOT NULL, price REAL NOT NULL, fee REAL NOT NULL, quote REAL NOT NULL);
CREATE TABLE IF NOT EXISTS marks (
    candle_ts INTEGER PRIMARY KEY, close REAL NOT NULL, cash REAL NOT NULL, units REAL NOT NULL,
    entry_price REAL NOT NULL, equity REAL NOT NULL, peak REAL NOT NULL, fees_paid REAL NOT NULL,
    trades INTEGER NOT NULL, bh_cash REAL NOT NULL, bh_units REAL NOT NULL, bh_equity REAL NOT NULL);
CREATE TABLE IF NOT EXISTS levels (candle_ts INTEGER PRIMARY KEY, level REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, candle_ts INTEGER,
    kind TEXT NOT NULL, detail TEXT NOT NULL);
"""

CANDLE_KINDS = ("warmup", "traded", "missed", "late")
_MARKS = "SELECT marks.*, levels.level FROM marks LEFT JOIN levels USING (candle_ts)"


def _create_owner_only(path: Path) -> None:
    """Create the file with mode 0600 before SQLite opens it (its -wal/-shm files copy this mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY)
    os.close(fd)


class Journal:
    """A session's journal file. ``Journal(path)`` opens or creates it; use as a context manager."""

    def __init__(self, path: str | Path, durable: bool = False) -> None:
        self.path = Path(path).expanduser()
        if self.path.exists() and not self.path.is_file():
            raise ConfigError(f"--journal {self.path} is not a file; give a file path such as trades.sqlite")
        existing = self.path.exists() and self.path.stat().st_size > 0
        if not self.path.exists():
            _create_owner_only(self.path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)  # explicit transactions below
            if existing and self._db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
                raise sqlite3.DatabaseError("it has no meta table")  # another program's database: leave it be
            os.chmod(self.path, OWNER_ONLY)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed candle (and order) survives a power cut; NORMAL survives a killed process.
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ConfigError(f"--journal {self.path} is not a Nexlify trade journal ({exc}); "
                              "give a new file name") from None
        self._in_transaction = False

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together or not at all."""
        if self._in_transaction:
            yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._in_transaction = True
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._in_transaction = False

    def _write(self, sql: str, values: tuple) -> None:
        with self.transaction():
            self._db.execute(sql, values)

    # --- meta ------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {key: json.loads(value) for key, value in self._db.execute("SELECT key, value FROM meta")}

    def set_meta(self, values: dict[str, Any]) -> None:
        with self.transaction():
            for key, value in values.items():
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    # --- candles ---------------------------------------------------------------------------
    def add_candle(self, row: list[float], kind: str, received_ms: int) -> None:
        if kind not in CANDLE_KINDS:
            raise ValueError(f"candle kind must be one of {CANDLE_KINDS}, got {kind!r}")
        self._write("INSERT INTO candles VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (int(row[0]), *map(float, row[1:6]),
                    kind, int(received_ms)))

    def candle(self, ts: int) -> list[float] | None:
        found = self._db.execute("SELECT ts, open, high, low, close, volume FROM candles WHERE ts = ?",
                                 (int(ts),)).fetchone()
        return None if found is None else [found[0], *found[1:]]

    def candles(self, last: int | None = None) -> list[list[float]]:
        """Every recorded candle (or the ``last`` N), oldest first, as [ts, o, h, l, c, v]."""
        sql = "SELECT ts, open, high, low, close, volume FROM candles ORDER BY ts"
        if last is not None:
            sql = f"SELECT * FROM ({sql} DESC LIMIT {int(last)}) ORDER BY ts"
        return [list(row) for row in self._db.execute(sql)]

    def candle_kinds(self) -> dict[int, str]:
        return dict(self._db.execute("SELECT ts, kind FROM candles"))

    def last_candle_ts(self) -> int | None:
        return self._db.execute("SELECT MAX(ts) FROM candles").fetchone()[0]

    # --- decisions -------------------------------------------------------------------------
    def add_decision(self, candle_ts: int, action: str, decided_ms: int) -> None:
        self._write("INSERT INTO decisions VALUES (?, ?, ?)", (int(candle_ts), action, int(decided_ms)))

    def decision(self, candle_ts: int) -> str | None:
        found = self._db.execute("SELECT action FROM decisions WHERE candle_ts = ?", (int(candle_ts),)).fetchone()
        return None if found is None else found[0]

    def has_decisions(self) -> bool:
        return self._db.execute("SELECT 1 FROM decisions LIMIT 1").fetchone() is not None

    def decisions(self) -> list[tuple[int, str]]:
        return list(self._db.execute("SELECT candle_ts, action FROM decisions ORDER BY candle_ts"))

    # --- orders and fills ------------------------------------------------------------------
    def add_order(self, client_id: str, candle_ts: int, side: str, amount: float, now_ms: int) -> None:
        self._write("INSERT INTO orders (client_id, candle_ts, side, amount, status, created_ms, updated_ms) "
                    "VALUES (?, ?, ?, ?, 'new', ?, ?)", (client_id, int(candle_ts), side, float(amount),
                                                         int(now_ms), int(now_ms)))

    def update_order(self, client_id: str, status: str, now_ms: int, exchange_order_id: str | None = None,
                     filled: float = 0.0, detail: str = "") -> None:
        self._write("UPDATE orders SET status = ?, exchange_order_id = ?, filled = ?, detail = ?, updated_ms = ? "
                    "WHERE client_id = ?", (status, exchange_order_id, float(filled), detail, int(now_ms),
                                            client_id))

    def orders(self, status: str | None = None) -> list[dict[str, Any]]:
        cursor = self._db.execute("SELECT * FROM orders" + (" WHERE status = ?" if status else "")
                                  + " ORDER BY created_ms", (status,) if status else ())
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def add_fill(self, candle_ts: int, fill: Fill, client_id: str | None = None) -> None:
        self._write("INSERT INTO fills (candle_ts, client_id, side, units, price, fee, quote) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", (int(candle_ts), client_id, fill.side, fill.units, fill.price,
                                                     fill.fee, fill.quote))

    def fills(self, since: int | None = None) -> list[dict[str, Any]]:
        """Every fill, or those of candles from ``since`` on, in the order they were recorded."""
        cursor = self._db.execute("SELECT * FROM fills" + (" WHERE candle_ts >= ?" if since is not None else "")
                                  + " ORDER BY id", (int(since),) if since is not None else ())
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    # --- marks -----------------------------------------------------------------------------
    def add_mark(self, candle_ts: int, close: float, account: Account, benchmark: Account) -> None:
        self._write("INSERT INTO marks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (
            int(candle_ts), float(close), account.cash, account.units, account.entry_price, account.equity,
            account.peak, account.fees_paid, account.trades, benchmark.cash, benchmark.units, benchmark.equity))
        self._write("INSERT INTO levels VALUES (?, ?)", (int(candle_ts), account.level))

    def marks(self) -> list[dict[str, Any]]:
        """Every mark, oldest first, with its ``level`` (None in journals written before levels)."""
        cursor = self._db.execute(f"{_MARKS} ORDER BY candle_ts")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def last_mark(self) -> dict[str, Any] | None:
        cursor = self._db.execute(f"{_MARKS} ORDER BY candle_ts DESC LIMIT 1")
        row = cursor.fetchone()
        return None if row is None else dict(zip([d[0] for d in cursor.description], row, strict=True))

    # --- events ----------------------------------------------------------------------------
    def add_event(self, at_ms: int, kind: str, detail: str, candle_ts: int | None = None) -> None:
        self._write("INSERT INTO events (at_ms, candle_ts, kind, detail) VALUES (?, ?, ?, ?)",
                    (int(at_ms), candle_ts, kind, detail))

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        cursor = self._db.execute("SELECT * FROM events" + (" WHERE kind = ?" if kind else "") + " ORDER BY id",
                                  (kind,) if kind else ())
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]


def mark_level(mark: dict[str, Any]) -> float:
    """The position level at ``mark``; a mark written before levels were journaled: 1 if it held
    units, else 0 (every position was all-in then)."""
    return float(mark["units"] > 0.0) if mark.get("level") is None else float(mark["level"])


def account_from_mark(mark: dict[str, Any]) -> tuple[Account, Account]:
    """The session's account and its buy-and-hold benchmark as they were at ``mark``."""
    account = Account(cash=mark["cash"], units=mark["units"], entry_price=mark["entry_price"],
                      equity=mark["equity"], peak=mark["peak"], fees_paid=mark["fees_paid"], trades=mark["trades"],
                      level=mark_level(mark))
    benchmark = Account(cash=mark["bh_cash"], units=mark["bh_units"], equity=mark["bh_equity"],
                        peak=mark["bh_equity"])
    return account, benchmark
