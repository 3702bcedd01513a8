"""Is a cheaper GAN budget as good? Seed-protocol runs paired draw by draw with a reference.

Each file is a `bench/seed_protocol.py --json` run of one dataset; the first is the reference
(e.g. the standard preset's 3,000 iterations at Adam 2e-4), the others candidates run with the
same --draws and --k (e.g. --gan-iterations 1000 --set gan_lr=0.0006). Draw d of every run
has the same images and seeds, so per (k, draw) the candidate's GAN figure minus the
reference's is a paired difference; the table gives its mean and 95 % t-interval over draws,
next to each run's GAN − oversample, per k.

    python bench/gan_budget.py REF.json CANDIDATE.json [CANDIDATE.json ...] [--figure balanced]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import format_table  # noqa: E402
from bench.seed_protocol import FIGURES, mean_sd, paired  # noqa: E402


def budget(options: dict) -> str:
    """'3000 it, lr 0.0002' from a run's RunConfig options (preset values where unset)."""
    from pipeline.config import PRESETS

    preset = PRESETS[options.get("preset", "standard")]
    its = options.get("gan_iterations", preset["gan_iterations"])
    lr = options.get("gan_lr", preset["gan_lr"])
    return f"{its} it, lr {lr:g}"


def load(path: Path) -> tuple[dict, dict[tuple[int, int], dict]]:
    doc = json.loads(path.read_text())
    return doc["settings"], {(r["k"], r["draw"]): r for r in doc["rows"]}


def compare(paths: list[Path], figure: str = "minority") -> str:
    """The table: per k and run, GAN mean ± sd, GAN − oversample and GAN − reference."""
    (ref_settings, ref), *candidates = [load(p) for p in paths]
    dataset = ref_settings["dataset"]
    header = ["k", "budget", "draws", "gan", "gan − oversample [95 % CI]", "gan − reference"]
    table = []
    for k in sorted({key[0] for key in ref}):
        for settings, rows in [(ref_settings, ref), *candidates]:
            if settings["dataset"] != dataset:
                raise ValueError(f"runs of different datasets: {dataset}, {settings['dataset']}")
            draws = sorted(d for (kk, d) in rows if kk == k and (k, d) in ref)
            gan = np.array([rows[(k, d)]["gan"][figure] for d in draws], float)
            over = np.array([rows[(k, d)]["oversample"][figure] for d in draws], float)
            base = np.array([ref[(k, d)]["gan"][figure] for d in draws], float)
            is_ref = rows is ref
            table.append(
                [
                    str(k),
                    budget(settings["options"]) + (" (reference)" if is_ref else ""),
                    str(len(draws)),
                    mean_sd(gan),
                    paired(gan - over),
                    "" if is_ref else paired(gan - base),
                ]
            )
    heading = dict(FIGURES)[figure]
    return f"{dataset}: GAN {heading}, paired by draw\n" + format_table(header, table)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="reference run first, then candidates")
    ap.add_argument("--figure", choices=[f for f, _ in FIGURES], default="minority")
    args = ap.parse_args(argv)
    if len(args.runs) < 2:
        ap.error("give the reference run and at least one candidate")
    print(compare(args.runs, args.figure))


if __name__ == "__main__":
    main()
