"""Small limits, so every hostile input stays a few KB to a few MB and the tests stay fast; an
API key for the routes that need one; a snapshot of the file system the tests compare."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from pipeline.archive import ArchiveLimits

LIMITS = ArchiveLimits(
    max_entries=50,
    max_total_bytes=4 * 1024**2,
    max_entry_bytes=2 * 1024**2,
    max_ratio=50.0,
    ratio_min_bytes=64 * 1024,
    max_name_length=200,
    max_image_pixels=1024 * 1024,
)
UPLOAD_LIMIT = 8 * 1024**2
# The same limits as BALANCER_* variables, for a service started by the tests.
LIMIT_ENV = {
    "BALANCER_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
    "BALANCER_ZIP_MAX_ENTRIES": str(LIMITS.max_entries),
    "BALANCER_ZIP_MAX_TOTAL_BYTES": str(LIMITS.max_total_bytes),
    "BALANCER_ZIP_MAX_ENTRY_BYTES": str(LIMITS.max_entry_bytes),
    "BALANCER_ZIP_MAX_RATIO": str(LIMITS.max_ratio),
    "BALANCER_ZIP_RATIO_MIN_BYTES": str(LIMITS.ratio_min_bytes),
    "BALANCER_ZIP_MAX_NAME_LENGTH": str(LIMITS.max_name_length),
    "BALANCER_IMAGE_MAX_PIXELS": str(LIMITS.max_image_pixels),
}
# SQLite files change on every request (WAL, a key's last use): compared by name only.
DB_SUFFIXES = (".db", ".db-wal", ".db-shm", ".db-journal")
# SQLite's side files exist only while some connection is open (the API, its sweeper thread,
# the worker), so whether they are there says nothing about what an upload wrote.
SQLITE_SIDE_FILES = (".db-wal", ".db-shm", ".db-journal")


def key_headers(sessions: sessionmaker[Session]) -> dict[str, str]:
    """An Authorization header with a fresh API key, where the app has API keys."""
    try:
        from app.auth import create_key
    except ImportError:  # the API-key feature is not there: no header needed
        return {}
    with sessions() as session:
        _, key = create_key(session, name="hardening", owner="hardening")
    return {"Authorization": f"Bearer {key}"}


def snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under root, with size and mtime for files other than databases and logs."""
    out: dict[str, tuple[int, int] | None] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.name.endswith(SQLITE_SIDE_FILES):
            continue
        volatile = path.name.endswith(DB_SUFFIXES) or path.suffix == ".log"
        if path.is_file() and not volatile:
            st = path.stat()
            out[rel] = (st.st_size, st.st_mtime_ns)
        else:
            out[rel] = None
    return out
