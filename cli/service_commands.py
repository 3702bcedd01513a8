"""`balancer serve | worker | db upgrade | db downgrade`. Heavy imports stay inside handlers so
that `balancer --help` and the pipeline commands start fast."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys

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
        "--concurrency", type=int, default=1, help="jobs at once; use 1 per GPU (default 1)"
    )
    worker.add_argument("--loglevel", default="info", help="debug, info, warning, error")
    worker.add_argument("--queues", default=None, help="comma-separated (default: BALANCER_QUEUE)")
    worker.set_defaults(func=worker_command)

    db = subparsers.add_parser("db", help="database migrations")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="{upgrade,downgrade}")
    up = db_commands.add_parser("upgrade", help="migrate the database to a revision")
    up.add_argument("revision", nargs="?", default="head", help="target (default: head)")
    up.set_defaults(func=db_upgrade_command)
    down = db_commands.add_parser("downgrade", help="revert the database to a revision")
    down.add_argument("revision", nargs="?", default="-1", help="target (default: -1; 'base')")
    down.set_defaults(func=db_downgrade_command)


def _add_listen_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")


def db_upgrade_command(args: argparse.Namespace) -> int:
    import migrations
    from app.settings import get_settings

    settings = get_settings()
    settings.ensure_dirs()
    migrations.upgrade(settings.database_url, args.revision)
    return 0


def db_downgrade_command(args: argparse.Namespace) -> int:
    import migrations
    from app.settings import get_settings

    migrations.downgrade(get_settings().database_url, args.revision)
    return 0


def worker_command(args: argparse.Namespace) -> int:
    from app.settings import get_settings
    from worker.celery_app import app

    queues = args.queues or get_settings().queue
    app.worker_main(worker_argv(queues, args.concurrency, args.loglevel))
    return 0


def worker_argv(queues: str, concurrency: int, loglevel: str) -> list[str]:
    # prefork: each job runs in a forked child, the only process that touches CUDA.
    # No gossip/mingle/heartbeat: they are broadcasts the embedded broker lacks, and they
    # only slow the start.
    return [
        "worker",
        f"--queues={queues}",
        f"--concurrency={concurrency}",
        f"--loglevel={loglevel}",
        "--pool=prefork",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    import migrations
    from app.main import create_app
    from app.settings import get_settings

    settings = get_settings()
    settings.ensure_dirs()
    migrations.upgrade(settings.database_url)
    worker = _start_worker(settings.queue)
    try:
        uvicorn.run(create_app(settings), host=args.host, port=args.port)
    finally:
        stop_process(worker)
    return 0


def api_command(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    uvicorn.run(create_app(), host=args.host, port=args.port)
    return 0


def _start_worker(queue: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "celery", "-A", "worker.celery_app"]
    cmd += worker_argv(queue, 1, "info")
    # Own process group: Ctrl-C in the terminal reaches serve, which then stops the worker.
    return subprocess.Popen(cmd, env=os.environ.copy(), start_new_session=True)


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
