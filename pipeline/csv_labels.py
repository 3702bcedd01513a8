"""The CSV labels layout: a zip holding `labels.csv` and the images it names.

    labels.csv            file,label[,split]     one row per image; split is train or test
    images/001.png ...                           paths relative to the folder of labels.csv

`labels.csv` sits at the top of the zip or in its one top-level folder. Every row is checked,
and all problems are reported together (the first one's rule in `rule`):

- errors (the upload is refused): a row naming a file that is not in the zip or is not an
  image, a row without a file or a label, a label that cannot be a folder name, a split other
  than train or test, two rows for one file, a header without `file` and `label` columns;
- warnings (the upload is accepted): images in the zip that no row names, which are skipped.

Rows are named by their line in the file (the header is line 1). Structure only: no image is
decoded here, and the file is read through the archive's capped reader (pipeline/archive.py).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from pipeline.archive import CONTROL_CHARS, MAX_COMPONENT_BYTES, is_image_name
from pipeline.errors import DatasetError, escape_name

LABELS_NAME = "labels.csv"
REQUIRED_COLUMNS = ("file", "label")
SPLITS = ("train", "test")
SHOWN_ERRORS = 5  # problems spelled out in one refusal; the rest are counted
SHOWN_NAMES = 5


@dataclass
class CsvLayout:
    """Training and test entries per label, as the rows of labels.csv assign them."""

    train: dict[str, list[str]]
    test: dict[str, list[str]]
    explicit: bool  # some row has split=test
    skipped: list[str] = field(default_factory=list)  # images no row names
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Problem:
    rule: str
    line: int
    text: str


def find_labels(names: list[str]) -> str | None:
    """The zip entry of labels.csv: at the top, or in the one folder that holds everything."""
    if LABELS_NAME in names:
        return LABELS_NAME
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1:
        nested = f"{next(iter(tops))}/{LABELS_NAME}"
        if nested in names:
            return nested
    return None


def read_csv_layout(data: bytes, csv_entry: str, names: list[str]) -> CsvLayout:
    """Check every row of labels.csv (`data`, the entry `csv_entry`) against the zip's file
    entries `names`; raise DatasetError listing the row errors."""
    folder = csv_entry[: -len(LABELS_NAME)]  # "" or "top/"
    text = _decode(data, csv_entry)
    reader = csv.reader(io.StringIO(text, newline=""))
    columns = _header(reader, csv_entry)
    files = {n[len(folder) :]: n for n in names if n.startswith(folder) and n != csv_entry}
    problems: list[_Problem] = []
    seen: dict[str, int] = {}  # file -> line of its first row
    train: dict[str, list[str]] = {}
    test: dict[str, list[str]] = {}
    try:
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue  # blank line
            problem = _place_row(row, line, columns, files, seen, train, test)
            if problem is not None:
                problems.append(problem)
    except csv.Error as exc:
        problems.append(_Problem("csv_syntax", reader.line_num, f"is not valid CSV ({exc})"))
    if problems:
        raise _refusal(problems, csv_entry)
    named = set(seen)
    unnamed = sorted(f for f in files if is_image_name(f) and f not in named)
    layout = CsvLayout(train=train, test=test, explicit=bool(test))
    layout.skipped = [files[f] for f in unnamed]
    if unnamed:
        shown = ", ".join(escape_name(f) for f in unnamed[:SHOWN_NAMES])
        more = ", ..." if len(unnamed) > SHOWN_NAMES else ""
        layout.warnings.append(
            f"{len(unnamed)} image(s) in the zip are named by no row of {csv_entry} and were "
            f"skipped: {shown}{more}"
        )
    return layout


def _decode(data: bytes, csv_entry: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{csv_entry} is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV",
            rule="csv_encoding",
            entry=csv_entry,
        ) from None


def _header(reader: csv.reader, csv_entry: str) -> dict[str, int]:  # type: ignore[valid-type]
    try:
        header = next(reader, None)
    except csv.Error as exc:
        header = None
        why = f"is not valid CSV ({exc})"
    else:
        why = "is empty"
    if header is None:
        raise DatasetError(
            f"{csv_entry} {why}; its first line must be the header file,label[,split]",
            rule="csv_header",
            entry=csv_entry,
        )
    columns = {name.strip().lower(): i for i, name in enumerate(header)}
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        found = ",".join(escape_name(h.strip()) for h in header)
        raise DatasetError(
            f"{csv_entry} line 1: the header has no {' or '.join(missing)} column (found "
            f"'{found}'); expected file,label and optionally split",
            rule="csv_header",
            entry=csv_entry,
        )
    return columns


def _place_row(
    row: list[str],
    line: int,
    columns: dict[str, int],
    files: dict[str, str],
    seen: dict[str, int],
    train: dict[str, list[str]],
    test: dict[str, list[str]],
) -> _Problem | None:
    """Put one row's image into train or test under its label, or say what is wrong."""

    def cell(name: str) -> str:
        i = columns.get(name)
        return row[i].strip() if i is not None and i < len(row) else ""

    file, label, split = cell("file").removeprefix("./"), cell("label"), cell("split").lower()
    if not file:
        return _Problem("csv_empty_file", line, "has no file name")
    shown = escape_name(file)
    if not label:
        return _Problem("csv_empty_label", line, f"has an empty label for '{shown}'")
    bad_label = _label_problem(label)
    if bad_label:
        return _Problem("csv_bad_label", line, f"label '{escape_name(label)}' {bad_label}")
    if "split" in columns and split not in SPLITS:
        return _Problem(
            "csv_bad_split", line, f"has split '{escape_name(split)}'; use train or test"
        )
    if file not in files:
        return _Problem("csv_unknown_file", line, f"names '{shown}', which is not in the zip")
    if not is_image_name(file):
        return _Problem(
            "csv_not_an_image", line, f"names '{shown}', which is not a PNG, JPEG or BMP file"
        )
    if file in seen:
        return _Problem(
            "csv_duplicate_row", line, f"names '{shown}' again (first on line {seen[file]})"
        )
    seen[file] = line
    (test if split == "test" else train).setdefault(label, []).append(files[file])
    return None


def _label_problem(label: str) -> str | None:
    """Why a label cannot be a class (a folder of the balanced zip), or None."""
    if CONTROL_CHARS.search(label):
        return "contains a control character"
    if "/" in label or "\\" in label:
        return "contains a slash; a label becomes a folder name"
    if label.startswith("."):
        return "starts with a dot; a label becomes a folder name"
    if len(label.encode("utf-8", "replace")) > MAX_COMPONENT_BYTES:
        return f"is over {MAX_COMPONENT_BYTES} bytes"
    return None


def _refusal(problems: list[_Problem], csv_entry: str) -> DatasetError:
    first = problems[0]
    lines = [f"{csv_entry} line {p.line} {p.text}" for p in problems[:SHOWN_ERRORS]]
    more = len(problems) - SHOWN_ERRORS
    text = "; ".join(lines) + (f"; and {more} more row error(s)" if more > 0 else "")
    if len(problems) > 1:
        text = f"{len(problems)} rows of {csv_entry} are wrong: {text}"
    return DatasetError(text, rule=first.rule, entry=f"{csv_entry}:{first.line}")
