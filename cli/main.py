"""`balancer` command-line entry point: one sub-command per job."""

from __future__ import annotations

import argparse
import sys

from cli.datasets_command import add_datasets_command
from cli.pipeline_commands import add_pipeline_commands
from cli.service_commands import add_service_commands
from cli.submit_command import add_submit_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="balancer",
        description="Balance under-represented classes of an image dataset with per-class GANs "
        "and report whether it helped.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_pipeline_commands(sub)
    add_service_commands(sub)
    add_submit_command(sub)
    add_datasets_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
