"""`balancer serve | api | worker | storage init | db upgrade | db downgrade | keys create |
keys list | keys revoke`. Heavy imports stay inside handlers so
that `balancer --help` and the pipeline commands start fast."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

from cli.workers import worker_argv
from worker.pool import DEFAULT_GPU_JOBS, jobs_at_once

if TYPE_CHECKING:  # imported inside the handlers: `balancer --help` stays fast
    from jobs.settings import Settings

log = logging.getLogger(__name__)


def add_service_commands(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="apply migrations, start the HTTP API and one worker process",
        description="Start the API and a worker on this machine. With no BALANCER_* variables "
        "it needs no server: SQLite and an embedded broker in ./data.",
    )
    _add_listen_options(serve)
    serve.set_defaults(func=serve_command)

    api = subparsers.add_parser(
        "api",
        help="start only the HTTP API (no migrations, no worker)",
        description="For deployments where `balancer db upgrade` and `balancer worker` run "
        "separately (see docker-compose.yml).",
    )
    _add_listen_options(api)
    api.set_defaults(func=api_command)

    worker = subparsers.add_parser("worker", help="start a Celery worker that runs jobs")
    worker.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="worker processes, one job each (CPU hosts); default: BALANCER_GPU_JOBS jobs at "
        "once in one process on a GPU, one job on a CPU",
    )
    worker.add_argument("--loglevel", default="info", help="debug, info, warning, error")
    worker.add_argument("--queues", default=None, help="comma-separated (default: BALANCER_QUEUE)")
    worker.add_argument(
        "--gpus",
        default=None,
        help="'all' or ids like 0,1: one worker process per GPU (CUDA_VISIBLE_DEVICES), "
        "each running BALANCER_GPU_JOBS jobs at once (default: one process)",
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve this worker's Prometheus figures at http://HOST:PORT/metrics",
    )
    worker.add_argument(
        "--metrics-host", default="127.0.0.1", help="address for --metrics-port (default 127.0.0.1)"
    )
    worker.set_defaults(func=worker_command)

    storage = subparsers.add_parser("storage", help="the file store (BALANCER_STORAGE_URL)")
    storage_commands = storage.add_subparsers(dest="storage_command", required=True)
    init = storage_commands.add_parser(
        "init", help="create the bucket if it is missing, then check that it is usable"
    )
    init.set_defaults(func=storage_init_command)

    db = subparsers.add_parser("db", help="database migrations")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="{upgrade,downgrade}")
    up = db_commands.add_parser("upgrade", help="migrate the database to a revision")
    up.add_argument("revision", nargs="?", default="head", help="target (default: head)")
    up.set_defaults(func=db_upgrade_command)
    down = db_commands.add_parser("downgrade", help="revert the database to a revision")
    down.add_argument("revision", nargs="?", default="-1", help="target (default: -1; 'base')")
    down.set_defaults(func=db_downgrade_command)
    _add_keys_commands(subparsers)


def _add_keys_commands(subparsers: argparse._SubParsersAction) -> None:
    keys = subparsers.add_parser(
        "keys",
        help="API keys: create, list, revoke",
        description="Every API route but health and docs needs a key. A key belongs to an "
        "owner, who sees only the jobs made with their keys.",
    )
    commands = keys.add_subparsers(
        dest="keys_command", required=True, metavar="{create,list,revoke}"
    )
    create = commands.add_parser(
        "create", help="create a key and print it (the last line of the output)"
    )
    create.add_argument("--name", required=True, help="what the key is for, e.g. 'laptop'")
    create.add_argument("--owner", default=None, help="whose jobs the key sees (default: the name)")
    create.set_defaults(func=keys_create_command)
    listing = commands.add_parser("list", help="list keys (never the keys themselves)")
    listing.set_defaults(func=keys_list_command)
    revoke = commands.add_parser(
        "revoke",
        help="revoke a key (the API refuses it within BALANCER_API_KEY_CACHE_S, 5 s by default)",
    )
    revoke.add_argument("key", metavar="PREFIX_OR_ID", help="the key's listed prefix or id")
    revoke.set_defaults(func=keys_revoke_command)


def _add_listen_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")


def db_upgrade_command(args: argparse.Namespace) -> int:
    import migrations
    from jobs.settings import get_settings

    settings = get_settings()
    settings.ensure_dirs()
    migrations.upgrade(settings.database_url, args.revision)
    return 0


def storage_init_command(args: argparse.Namespace) -> int:
    from jobs.settings import get_settings
    from jobs.storage import StorageUnavailable, storage_for

    settings = get_settings()
    storage = storage_for(settings)
    try:
        created = storage.create_if_missing()
        storage.check()
    except StorageUnavailable as exc:
        print(f"storage: {exc}", file=sys.stderr)
        return 1
    print(f"storage: {storage.description}: {'created' if created else 'exists'}, usable")
    return 0


def db_downgrade_command(args: argparse.Namespace) -> int:
    import migrations
    from jobs.settings import get_settings

    migrations.downgrade(get_settings().database_url, args.revision)
    return 0


def _key_sessions():  # noqa: ANN202 (sessionmaker; its import stays in here)
    """Sessions on the key table. The embedded default (SQLite in the data dir) is migrated
    first, as `serve` does; a server database is left to `balancer db upgrade`, which its
    operator runs (once, for every replica) and which needs its own permissions."""
    from sqlalchemy import inspect

    import migrations
    from jobs.db import make_engine, make_sessionmaker
    from jobs.settings import get_settings

    settings = get_settings()
    settings.ensure_dirs()
    if settings.database_url.startswith("sqlite"):
        migrations.upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    if not inspect(engine).has_table("api_keys"):
        raise SystemExit("the database has no api_keys table yet: run `balancer db upgrade`")
    return make_sessionmaker(engine)


def keys_create_command(args: argparse.Namespace) -> int:
    from app.auth import create_key

    name, owner = args.name.strip(), (args.owner or args.name).strip()
    if not name or not owner:
        raise SystemExit("--name and --owner must not be empty")
    with _key_sessions()() as session:
        row, key = create_key(session, name, owner)
    print(f"Created API key {row.prefix}... (id {row.id}) named {name!r} for owner {owner!r}.")
    print("Store it now: only its hash is kept, it cannot be shown again.")
    print(key)
    return 0


def keys_list_command(args: argparse.Namespace) -> int:
    from app.auth import list_keys

    with _key_sessions()() as session:
        rows = [_key_row(k) for k in list_keys(session)]
    header = ("PREFIX", "NAME", "OWNER", "CREATED", "REVOKED", "LAST USED", "ID")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _key_row(key) -> tuple[str, ...]:  # noqa: ANN001 (jobs.models.ApiKey)
    def when(ts) -> str:  # noqa: ANN001
        return ts.strftime("%Y-%m-%d %H:%M UTC") if ts else "-"

    return (
        key.prefix,
        key.name,
        key.owner,
        when(key.created_at),
        when(key.revoked_at),
        when(key.last_used_at),
        str(key.id),
    )


def keys_revoke_command(args: argparse.Namespace) -> int:
    from app.auth import find_keys, revoke_key

    with _key_sessions()() as session:
        found = find_keys(session, args.key)
        if not found:
            print(f"no key with prefix or id {args.key!r}", file=sys.stderr)
            return 1
        if len(found) > 1:
            ids = ", ".join(str(k.id) for k in found)
            print(f"{len(found)} keys start with {args.key!r}; give the id: {ids}", file=sys.stderr)
            return 1
        key = found[0]
        done = revoke_key(session, key)
    state = "Revoked" if done else "Already revoked:"
    print(f"{state} key {key.prefix}... (id {key.id}) named {key.name!r} of owner {key.owner!r}.")
    return 0


def ensure_first_key(database_url: str) -> None:
    """With no key at all, create one and print it: a fresh `serve` is usable, never open."""
    from app.auth import count_keys, create_key
    from jobs.db import make_engine, make_sessionmaker

    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            if count_keys(session):
                return
            row, key = create_key(session, "first key", "default")
    finally:
        engine.dispose()
    print(
        f"\nNo API keys existed, so one was created (owner {row.owner!r}, prefix {row.prefix}).\n"
        "Send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`. It is shown only "
        "this once:\n\n"
        f"    {key}\n\n"
        "Make more with `balancer keys create --name NAME [--owner OWNER]`; list them with "
        "`balancer keys list`, revoke one with `balancer keys revoke PREFIX`.\n",
        flush=True,
    )


def worker_command(args: argparse.Namespace) -> int:
    if args.metrics_port is not None:  # first: before Celery and the gauges are imported
        from worker.metrics_server import serve

        serve(args.metrics_port, args.metrics_host)
    from jobs.settings import get_settings
    from worker.celery_app import app

    settings = get_settings()
    queues = args.queues or settings.queue
    if args.gpus is not None:
        from cli.workers import parse_gpus, run_gpu_workers

        jobs = settings.gpu_jobs or DEFAULT_GPU_JOBS  # each child has a GPU by construction
        return run_gpu_workers(parse_gpus(args.gpus), queues, args.loglevel, jobs)
    if args.concurrency is not None:  # N prefork processes, one job each
        argv = worker_argv(queues, 1, args.loglevel, processes=args.concurrency)
    else:
        argv = worker_argv(queues, jobs_at_once(settings.gpu_jobs), args.loglevel)
    app.worker_main(argv)
    return 0


def serve_command(args: argparse.Namespace) -> int:
    import migrations
    from jobs.settings import get_settings

    settings = get_settings()
    settings.ensure_dirs()
    migrations.upgrade(settings.database_url)
    ensure_first_key(settings.database_url)
    worker = _start_worker(settings.queue, settings.serve_worker_nice)
    # uvicorn shuts down on SIGTERM, restores the previous handler and re-raises the signal;
    # the default handler would end this process before `finally` stops the worker.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        run_api(settings, args.host, args.port)
    finally:
        stop_process(worker)
    return 0


def run_api(settings: Settings, host: str, port: int) -> None:
    """uvicorn with settings.api_workers processes. Several are started from the app's import
    string, each reading the same BALANCER_* settings; SIGTERM stops them all, then returns."""
    import uvicorn

    from app.main import create_app

    raise_open_files_limit()
    if settings.api_workers > 1:
        uvicorn.run(
            "app.main:create_app", factory=True, host=host, port=port,
            workers=settings.api_workers,
        )  # fmt: skip
    else:
        uvicorn.run(create_app(settings), host=host, port=port)


def raise_open_files_limit(want: int = 65536) -> None:
    """Every client connection is a file descriptor, and an event stream stays open for as long
    as its job runs; many systems start processes with a soft limit of 1024. Raise it towards
    the hard limit (the worker processes uvicorn starts inherit it)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d: %s", soft, exc)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def api_command(args: argparse.Namespace) -> int:
    from jobs.settings import get_settings

    run_api(get_settings(), args.host, args.port)
    return 0


def _start_worker(queue: str, nice: int = 0) -> subprocess.Popen:
    # `balancer worker` decides itself how many jobs it runs at once (worker/pool.py).
    cmd = [sys.executable, "-m", "cli.main", "worker", f"--queues={queue}", "--loglevel=info"]
    # Own process group: Ctrl-C in the terminal reaches serve, which then stops the worker.
    return subprocess.Popen(
        cmd,
        env=os.environ.copy(),
        start_new_session=True,
        preexec_fn=(lambda: _lower_priority(nice)) if nice else None,
    )


def _lower_priority(nice: int) -> None:
    """In the worker's child, after its setsid: nice the process and, where the kernel groups
    CPU time by session (Linux autogroup), the new session's group too."""
    os.nice(nice)
    try:
        with open("/proc/self/autogroup", "w") as group:
            group.write(str(nice))
    except OSError:  # no autogroups here: the process nice does it
        pass


def stop_process(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Warm shutdown (TERM: finish the current job), then cold (QUIT), then KILL. An
    interrupted job is re-delivered to the next worker (acks_late)."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGQUIT, 5.0)):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            log.warning("worker %d still running after %s", proc.pid, sig.name)
    # Its own session (start_new_session): the group is the worker and its pool children.
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
