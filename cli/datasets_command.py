"""`balancer datasets upload|list|delete`: datasets stored in a running service, which any
number of jobs then run on (`balancer submit --dataset-id ID`). Exit codes as `balancer
submit`'s: 0 done, 2 refused (a bad dataset, an unknown id, one in use) or bad arguments, 3 the
service cannot be reached (or answers 5xx)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cli.submit_command import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, _say, add_service_options


def add_datasets_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "datasets",
        help="upload, list or delete datasets stored in a balancer service",
        description="Upload a dataset once and start any number of jobs on it with "
        "`balancer submit --dataset-id ID`.",
    )
    commands = p.add_subparsers(dest="datasets_command", required=True, metavar="COMMAND")
    upload = commands.add_parser(
        "upload",
        help="upload a dataset zip or folder; prints its id last",
        description="Upload a zip (class folders, train/ and test/, or labels.csv with the "
        "images it names) or a folder (zipped while it uploads). Prints the classes and "
        "counts the service found, then the dataset's id on the last line.",
    )
    upload.add_argument("dataset", type=Path, metavar="DATASET.zip|DIR")
    add_service_options(upload)
    upload.set_defaults(func=upload_command)
    listing = commands.add_parser("list", help="list the built-in datasets and yours")
    add_service_options(listing)
    listing.set_defaults(func=list_command)
    delete = commands.add_parser(
        "delete", help="delete a dataset (refused while queued or running jobs use it)"
    )
    delete.add_argument("dataset_id", metavar="ID")
    add_service_options(delete)
    delete.set_defaults(func=delete_command)


def upload_command(args: argparse.Namespace) -> int:
    if not args.dataset.exists():
        return _say(f"{args.dataset}: no such file or folder", EXIT_REFUSED)

    def upload(client) -> int:  # noqa: ANN001 (balancer.Client)
        dataset = client.upload_dataset(args.dataset)
        for line in describe(dataset.info):
            print(line)
        print(dataset.id, flush=True)
        return EXIT_OK

    return _with_client(args, upload)


def list_command(args: argparse.Namespace) -> int:
    def listing(client) -> int:  # noqa: ANN001
        rows = [("ID", "CLASSES", "IMAGES", "LAYOUT", "NAME")]
        for d in client.datasets(limit=1000):
            info = d.info
            kind = f"{info['layout']}, {info['mode']}" + (", built-in" if d.builtin else "")
            rows.append((d.id, str(len(d.classes)), str(info["images"]), kind, d.name or ""))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
        return EXIT_OK

    return _with_client(args, listing)


def delete_command(args: argparse.Namespace) -> int:
    def delete(client) -> int:  # noqa: ANN001
        client.dataset(args.dataset_id).delete()
        print(f"deleted {args.dataset_id}")
        return EXIT_OK

    return _with_client(args, delete)


def describe(info: dict) -> list[str]:
    """The classes and their counts, the layout and any warnings, one line each."""
    lines = [
        f"{info['name']}: {info['images']} images, {info['layout']} layout, {info['mode']}, "
        f"{'x'.join(map(str, info['image_size']['min']))} to "
        f"{'x'.join(map(str, info['image_size']['max']))} px, test {info['test_source']}"
    ]
    for name in info["classes"]:
        counts = info["counts"][name]
        lines.append(f"  {name}: {counts['train']} train, {counts['test']} test")
    lines += [f"warning: {w}" for w in info.get("warnings", [])]
    return lines


def _with_client(args: argparse.Namespace, action) -> int:  # noqa: ANN001 (Client -> int)
    from balancer.client import Client, ServiceError, ServiceUnreachable

    if not args.url:
        return _say("--url (or BALANCER_URL) is needed", EXIT_REFUSED)
    key = args.key or os.environ.get("BALANCER_API_KEY")
    try:
        with Client(args.url, key) as client:
            return action(client)
    except ServiceUnreachable as exc:
        return _say(str(exc), EXIT_UNREACHABLE)
    except ServiceError as exc:
        return _say(str(exc), EXIT_UNREACHABLE if exc.status >= 500 else EXIT_REFUSED)
