"""Engine and session factory. SQLite gets WAL + a busy timeout: the API and the worker write
to the same file from different processes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event, pool
from sqlalchemy.orm import Session, sessionmaker

# No request may ever wait for a pooled connection. FastAPI runs a sync route's dependencies,
# the route and its response validation as separate thread-pool calls (40 threads), and the
# request's session keeps its connection in between. With a bounded pool, under load every
# thread can end up waiting for a connection held by a request that waits for a thread: a
# deadlock until pool_timeout, then 503s (bench/load.py hit it at 200 concurrent polls).
# PostgreSQL keeps a few warm and opens more as needed, bounded by the server's max_connections
# (beyond it: a quick 503). SQLite connections are a file open: unpooled, except in the API
# (pool_sqlite), where a connect and its three PRAGMAs per request were ~10 % of a status
# poll's CPU (py-spy, bench/load.py); it keeps a few the same way, with the same overflow.
PG_POOL_SIZE = 10


def make_engine(url: str, *, pool_sqlite: bool = False, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        if pool_sqlite and kwargs.get("poolclass") is None:
            kwargs |= {"poolclass": pool.QueuePool, "pool_size": PG_POOL_SIZE, "max_overflow": -1}
        kwargs.setdefault("poolclass", pool.NullPool)
        # check_same_thread off: a pooled connection serves one thread-pool thread at a time.
        connect_args = {"timeout": 30, "check_same_thread": False}
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # pre_ping: a worker may sit idle for hours between jobs, and the database may have been
    # restarted meanwhile; dead connections are replaced quietly, so the API and the worker
    # recover without a restart of their own. A connect timeout: a database host that drops
    # packets makes requests answer 503 within seconds (app/problems.py), not hang for minutes.
    if url.startswith("postgresql"):
        kwargs.setdefault("connect_args", {}).setdefault("connect_timeout", 5)
        if kwargs.get("poolclass") is None:
            kwargs |= {"pool_size": PG_POOL_SIZE, "max_overflow": -1}
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 (DB-API connection)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: routes return ORM objects after committing.
    return sessionmaker(engine, expire_on_commit=False)
