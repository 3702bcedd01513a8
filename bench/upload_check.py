"""How long the upload-time check takes on a 20,000-image zip (MNIST digits, 28x28 PNGs).

Three figures, each the median of --repeats runs:
- `check_upload`: the whole check the API runs before its 202 (zip structure, layout, one
  capped read of every entry, every image's header);
- header checks alone: `check_image_header` on every image, bytes already in memory;
- a real `POST /v1/jobs` through the app (in process, SQLite and the embedded broker):
  multipart parsing, saving the upload, the check, the job row, queueing; until the 202.

    python bench/upload_check.py [--images 20000] [--repeats 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from PIL import Image  # noqa: E402

from bench.common import ROOT, format_table, load_digits  # noqa: E402
from pipeline.archive import check_image_header, file_entries, is_image_name, open_zip  # noqa: E402
from pipeline.layout import check_upload  # noqa: E402


def write_zip(path: Path, count: int) -> None:
    """`count` PNGs in ten class folders, as a user would zip them (deflate)."""
    x, y = load_digits()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(count):
            buf = io.BytesIO()
            Image.fromarray(x[i % len(x)]).save(buf, "PNG")
            zf.writestr(f"digit_{y[i % len(y)]}/{i:05d}.png", buf.getvalue())


def time_check(path: Path) -> float:
    start = time.perf_counter()
    check_upload(path)
    return time.perf_counter() - start


def time_headers(path: Path) -> float:
    with open_zip(path) as zf:
        images = [(i.filename, zf.read(i)) for i in file_entries(zf) if is_image_name(i.filename)]
    start = time.perf_counter()
    for name, data in images:
        check_image_header(data, name)
    return time.perf_counter() - start


def time_post(path: Path, tmp: Path, repeats: int) -> list[float]:
    from app.auth import create_key
    from app.main import create_app
    from jobs.models import Base
    from jobs.settings import Settings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        from starlette.testclient import TestClient

    settings = Settings(
        data_dir=tmp / "data", database_url="", broker_url="", owner_max_active_jobs=1000
    )
    app = create_app(settings)
    Base.metadata.create_all(app.state.engine)
    with app.state.sessionmaker() as session:
        _, key = create_key(session, name="bench", owner="bench")
    client = TestClient(app, headers={"Authorization": f"Bearer {key}"})
    data = path.read_bytes()
    out = []
    for _ in range(repeats):
        files = {"dataset": ("d.zip", data, "application/zip")}
        start = time.perf_counter()
        resp = client.post("/v1/jobs", files=files, data={"config": "{}"})
        out.append(time.perf_counter() - start)
        assert resp.status_code == 202, resp.text
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        path = tmp / "upload.zip"
        write_zip(path, args.images)
        checks = [time_check(path) for _ in range(args.repeats)]
        headers = [time_headers(path) for _ in range(args.repeats)]
        posts = time_post(path, tmp, args.repeats)
        size = path.stat().st_size
    result = {
        "images": args.images,
        "zip_bytes": size,
        "check_upload_s": checks,
        "header_checks_s": headers,
        "post_until_202_s": posts,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
    }
    rows = [
        [name, f"{statistics.median(v):.2f}", f"{min(v):.2f}", f"{max(v):.2f}"]
        for name, v in [
            ("check_upload (whole check)", checks),
            ("image header checks alone", headers),
            ("POST /v1/jobs until 202", posts),
        ]
    ]
    print(f"{args.images} images, zip {size / 1e6:.1f} MB, {args.repeats} runs each")
    print(format_table(["step", "median s", "min s", "max s"], rows))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
