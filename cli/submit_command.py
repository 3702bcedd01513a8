"""`balancer submit`: start a job on a running service, on a dataset sent with it or on a
stored one (`--dataset-id`), optionally follow the job and fetch its outputs. Exit codes: 0
succeeded (or submitted, without --wait), 1 the job failed or was canceled, 2 a refused upload
or bad arguments, 3 the service cannot be reached (or answers 5xx).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.config import PRESETS

EXIT_OK, EXIT_JOB_FAILED, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3
OUTPUTS = {
    "report.json": None,  # written from the report answer
    "report.html": "download_report_html",
    "balanced.zip": "download_balanced",
    "samples.png": "download_samples",
}
# Options sent as the job's config when given; left out, the service's defaults apply.
CONFIG_OPTIONS = {
    "target": int,
    "gan_iterations": int,
    "epochs": int,
    "seeds": int,
    "seed": int,
    "image_size": int,
    "test_fraction": float,
}


def add_submit_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submit",
        help="start a job on a balancer service (a zip or folder, or --dataset-id)",
        description="Upload a dataset zip, or a folder of class folders (zipped while it "
        "uploads), to a running service, or name a stored dataset with --dataset-id (see "
        "`balancer datasets`), and print the job id. With --wait, follow the job "
        "with a progress bar and print the per-class table; with --out, also download its "
        "outputs. Exit codes: 0 succeeded, 1 job failed or canceled, 2 refused upload or bad "
        "arguments, 3 service unreachable.",
    )
    p.add_argument("dataset", type=Path, nargs="?", metavar="DATASET.zip|DIR")
    p.add_argument(
        "--dataset-id",
        help="run on a dataset the service has (uploaded before, or built in such as "
        "demo-mnist-1-2-3) instead of uploading one",
    )
    add_service_options(p)
    p.add_argument("--preset", choices=sorted(PRESETS), help="quick (CPU-sized) or standard")
    for name, kind in CONFIG_OPTIONS.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    p.add_argument("--wait", action="store_true", help="follow the job until it ends")
    p.add_argument(
        "--out", type=Path, help="download report.json, report.html, balanced.zip, samples.png "
        "into this folder once the job succeeded (implies --wait)",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=submit_command)


def add_service_options(p: argparse.ArgumentParser) -> None:
    """--url and --key, for the commands that talk to a running service."""
    p.add_argument(
        "--url",
        default=os.environ.get("BALANCER_URL"),
        help="the service, e.g. http://127.0.0.1:8000 (default: BALANCER_URL)",
    )
    p.add_argument("--key", default=None, help="API key (default: BALANCER_API_KEY)")


def submit_command(args: argparse.Namespace) -> int:
    from balancer.client import Client, ServiceError, ServiceUnreachable

    if not args.url:
        return _say("--url (or BALANCER_URL) is needed", EXIT_REFUSED)
    if (args.dataset is None) == (args.dataset_id is None):
        return _say("give a dataset (zip or folder) or --dataset-id, not both", EXIT_REFUSED)
    if args.dataset is not None and not args.dataset.exists():
        return _say(f"{args.dataset}: no such file or folder", EXIT_REFUSED)
    key = args.key or os.environ.get("BALANCER_API_KEY")
    config = {"preset": args.preset} | {name: getattr(args, name) for name in CONFIG_OPTIONS}
    try:
        with Client(args.url, key) as client:
            job = client.submit(args.dataset, dataset_id=args.dataset_id, **config)
            print(job.id, flush=True)
            if not (args.wait or args.out):
                return EXIT_OK
            job.wait(progress=not args.no_progress)
            if job.status != "succeeded":
                reason = f": {job.error}" if job.error else ""
                return _say(f"job {job.id} {job.status}{reason}", EXIT_JOB_FAILED)
            return _finish(job, args.out)
    except ServiceUnreachable as exc:
        return _say(str(exc), EXIT_UNREACHABLE)
    except ServiceError as exc:
        return _say(str(exc), EXIT_UNREACHABLE if exc.status >= 500 else EXIT_REFUSED)


def _finish(job, out: Path | None) -> int:  # noqa: ANN001 (balancer.Job)
    import json

    from cli.pipeline_commands import format_report_table

    report = job.report()
    print(format_report_table(report))
    if out is None:
        return EXIT_OK
    out.mkdir(parents=True, exist_ok=True)
    for name, method in OUTPUTS.items():
        if method is None:
            (out / name).write_text(json.dumps(report, indent=2))
        else:
            getattr(job, method)(out / name)
    print(f"\nwrote {', '.join(str(out / name) for name in OUTPUTS)}")
    return EXIT_OK


def _say(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code
