"""report.html: one self-contained page (charts and samples embedded as base64 PNG).

Everything on the page comes from the report dict (the same figures as report.json) plus, when
given, the images: real training images and generated ones per minority class, and the
per-image memorisation distances. Charts are drawn with matplotlib's Agg backend, the page
with the Jinja2 template templates/report.html.j2.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display, ever: this runs in workers and CI

import numpy as np  # noqa: E402
import torch  # noqa: E402
from jinja2 import Environment, FileSystemLoader, select_autoescape  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline.dataset import ImageDataset  # noqa: E402
from pipeline.packaging import to_pil  # noqa: E402
from pipeline.quality import QualityResult, nearest_distances  # noqa: E402

TEMPLATES = Path(__file__).parent / "templates"
METHOD_LABELS = {"baseline": "baseline", "oversample": "oversampling", "gan": "GAN"}
COLORS = {"baseline": "#8c8c8c", "oversample": "#4c78a8", "gan": "#f58518"}
VERDICT_COLORS = {"helped": "#2e7d32", "hurt": "#c62828", "no clear difference": "#616161"}
PER_ROW = 12  # images per sample strip
CELL = 48  # px per sample tile


def write_html_report(
    path: Path,
    report: dict,
    ds: ImageDataset | None = None,
    synthetic: dict[int, torch.Tensor] | None = None,
    quality: QualityResult | None = None,
    charts: dict[str, str | None] | None = None,
) -> None:
    page = render_html(report, ds, synthetic, quality, charts)
    path.write_text(page, encoding="utf-8")


def render_html(
    report: dict,
    ds: ImageDataset | None = None,
    synthetic: dict[int, torch.Tensor] | None = None,
    quality: QualityResult | None = None,
    charts: dict[str, str | None] | None = None,
) -> str:
    """The page as a string; without ds and synthetic it has no sample grids. charts: the
    charts already drawn (draw_charts, or chart_tasks run elsewhere); None: drawn here."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["j2", "html"])
    )
    env.filters.update(pct=pct, ci=ci_text, points=points, num=num)
    if charts is None:
        charts = draw_charts(report, quality)
    page = context(report, ds, synthetic, charts)
    return env.get_template("report.html.j2").render(**page)


def context(
    report: dict,
    ds: ImageDataset | None,
    synthetic: dict[int, torch.Tensor] | None,
    charts: dict[str, str | None],
) -> dict:
    return {
        "r": report,
        "methods": list(report["methods"]),
        "minority": list(report.get("comparisons", {})),
        "headline": headline(report),
        "augmentation": augmentation_sentence(report),
        "method_notes": method_notes(report),
        "charts": {**charts, "generators": generator_rows(report.get("gan") or {})},
        "samples": sample_strips(ds, synthetic) if ds is not None and synthetic else {},
    }


CHARTS = ("accuracy", "differences", "confusion", "losses", "memorisation")


def chart_tasks(
    report: dict, quality: QualityResult | None
) -> list[tuple[str, Callable[[Any], str], Any]]:
    """The page's charts as (name, function, argument), each drawing one PNG data URI.

    They are independent matplotlib figures of a few hundred milliseconds each, so a caller
    with processes to spare draws them side by side (pipeline/output_pool.py)."""
    details = quality.details if quality else {}
    tasks: list[tuple[str, Callable[[Any], str], Any]] = [
        ("accuracy", accuracy_chart, report),
        ("confusion", confusion_chart, report),
    ]
    if report.get("comparisons"):
        tasks.append(("differences", difference_chart, report))
    if report.get("gan"):
        tasks.append(("losses", loss_chart, report["gan"]))
    if details:
        tasks.append(("memorisation", memorisation_chart, details))
    return tasks


def draw_charts(report: dict, quality: QualityResult | None) -> dict[str, str | None]:
    """Every chart of the page, drawn here, one after the other (absent ones None)."""
    charts: dict[str, str | None] = dict.fromkeys(CHARTS)
    charts.update({name: draw(arg) for name, draw, arg in chart_tasks(report, quality)})
    return charts


# ---- text ---------------------------------------------------------------------------------


def pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f} %"


def ci_text(pair: list | None) -> str:
    if not pair or pair[0] is None:
        return ""
    return f"[{100 * pair[0]:.1f}, {100 * pair[1]:.1f}]"


def points(x: float | None) -> str:
    """A difference of two accuracies in percentage points, signed."""
    return "n/a" if x is None else f"{100 * x:+.1f} pts"


def num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}" if abs(x) >= 1000 else f"{x:.{digits}f}"


def augmented(report: dict) -> bool:
    """Whether the classifiers were trained with augmentation (older reports: no record)."""
    return report.get("classifier_augmentation", {}).get("resolved", "none") != "none"


def augmentation_sentence(report: dict) -> str | None:
    """'Every classifier was trained with random rotation ±15°, ...' (None for old reports)."""
    aug = report.get("classifier_augmentation")
    if not aug:
        return None
    text = aug["description"][0].upper() + aug["description"][1:]
    if aug["policy"] != aug["resolved"]:
        text += f" (policy {aug['policy']}: {aug['resolved']})"
    return text + "."


def control_name(report: dict) -> str:
    """What the method `oversample` is, in words."""
    if augmented(report):
        return "random oversampling + the same augmentation"
    return "random oversampling"


def method_notes(report: dict) -> list[tuple[str, str]]:
    """(method, what its classifier was trained on), one per method."""
    same = " with the same augmentation" if augmented(report) else ""
    return [
        ("baseline", f"the real images{same}"),
        (
            "oversample",
            f"the real images with minority images repeated at random up to "
            f"{report.get('target')} per class{same} ({control_name(report)})",
        ),
        ("gan", f"the real images plus the generated ones{same}"),
    ]


def lead_verdict(report: dict, name: str) -> dict | None:
    """The comparison the report leads with: GAN against oversampling, said plainly."""
    c = report["comparisons"][name].get("gan_vs_oversample")
    if c is None:
        return None
    lo, hi = c["difference_ci95"]
    figures = f"{points(c['difference'])} (95 % CI {points(lo)} to {points(hi)})"
    control = control_name(report)
    if c["verdict"] == "helped":
        text = f"The GAN beat {control} on class {name}: {figures}."
    elif c["verdict"] == "hurt":
        text = f"The GAN did not beat {control} on class {name}; it did worse: {figures}."
    else:
        text = f"The GAN did not beat {control} on class {name}: no clear difference, {figures}."
    color = VERDICT_COLORS[c["verdict"]]
    return {"text": text, "verdict": c["verdict"], "color": color, "note": c.get("note")}


def headline(report: dict) -> list[dict]:
    """Per minority class: the GAN vs oversampling verdict first, counts, accuracy (and
    precision) per method with intervals, and the verdicts behind them."""
    counts = {c["name"]: c for c in report["classes"]}
    lines = verdict_lines(report)
    out = []
    for name in report.get("comparisons", {}):
        out.append(
            {
                "cls": name,
                "counts": counts[name],
                "accs": [
                    {
                        "method": METHOD_LABELS.get(m, m),
                        "acc": f["per_class"][name]["accuracy"],
                        "ci": f["per_class"][name].get("accuracy_ci95"),
                        "precision": f["per_class"][name].get("precision"),
                    }
                    for m, f in report["methods"].items()
                ],
                "lead": lead_verdict(report, name),
                "verdicts": [v for v in lines if v["cls"] == name],
            }
        )
    return out


def verdict_lines(report: dict) -> list[dict]:
    """One entry per (minority class, comparison): the verdict and the figure behind it.

    Oversampling first: it is the control the GAN has to beat to be worth its cost.
    """
    lines = []
    for name, comp in report.get("comparisons", {}).items():
        for other in ("oversample", "baseline"):
            c = comp.get(f"gan_vs_{other}")
            if c is None:
                continue
            lo, hi = c["difference_ci95"]
            lines.append(
                {
                    "cls": name,
                    "other": other,
                    "against": control_name(report) if other == "oversample" else other,
                    "verdict": c["verdict"],
                    "color": VERDICT_COLORS[c["verdict"]],
                    "detail": f"{points(c['difference'])} (95 % CI {points(lo)} to {points(hi)})",
                    "note": c.get("note"),
                }
            )
    return lines


# ---- charts -------------------------------------------------------------------------------


def png_data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def accuracy_chart(report: dict) -> str:
    """Per-class accuracy per method, with 95 % interval error bars."""
    names = [c["name"] for c in report["classes"]]
    methods = list(report["methods"])
    fig = Figure(figsize=(max(6.0, 0.9 * len(names) * len(methods) / 2 + 2), 3.6))
    ax = fig.subplots()
    width = 0.8 / len(methods)
    x = np.arange(len(names))
    for j, m in enumerate(methods):
        per = report["methods"][m]["per_class"]
        acc = np.array([_nan(per[n]["accuracy"]) for n in names])
        lo, hi = (
            np.array([_nan((per[n].get("accuracy_ci95") or [None, None])[i]) for n in names])
            for i in (0, 1)
        )
        err = np.nan_to_num(np.vstack([acc - lo, hi - acc]))
        ax.bar(
            x + (j - (len(methods) - 1) / 2) * width,
            acc,
            width,
            yerr=err,
            capsize=3,
            label=m,
            color=COLORS.get(m),
        )
    ax.set_xticks(x, names, rotation=45 if len(names) > 8 else 0)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test accuracy")
    ax.set_title("Per-class test accuracy (mean over seeds, 95 % CI)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return png_data_uri(fig)


def difference_chart(report: dict) -> str:
    """GAN minus baseline / oversampling per minority class, with intervals and the zero line."""
    rows = verdict_lines(report)
    raw = [report["comparisons"][r["cls"]][f"gan_vs_{r['other']}"] for r in rows]
    fig = Figure(figsize=(6.5, 0.45 * len(rows) + 1.2))
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    for yi, r, c in zip(y, rows, raw, strict=True):
        lo, hi = (_nan(v) for v in c["difference_ci95"])
        ax.plot([100 * lo, 100 * hi], [yi, yi], color=r["color"], lw=2)
        ax.plot(100 * _nan(c["difference"]), yi, "o", color=r["color"])
    ax.axvline(0, color="black", lw=0.8)
    short = {"oversample": "oversampling" + (" + aug." if augmented(report) else "")}
    ax.set_yticks(
        y, [f"class {r['cls']}: GAN vs {short.get(r['other'], r['other'])}" for r in rows]
    )
    ax.set_xlabel("difference in class accuracy (percentage points, 95 % CI)")
    ax.grid(axis="x", alpha=0.3)
    return png_data_uri(fig)


def confusion_chart(report: dict) -> str:
    """Row-normalised confusion matrix per method (mean counts over seeds written in cells)."""
    names = [c["name"] for c in report["classes"]]
    methods = list(report["methods"])
    k = len(names)
    side = min(3.2 + 0.15 * k, 8.0)
    fig = Figure(figsize=(side * len(methods), side))
    axes = np.atleast_1d(fig.subplots(1, len(methods)))
    for ax, m in zip(axes, methods, strict=True):
        cm = np.array(report["methods"][m]["confusion_matrix"], dtype=float)
        rows = cm / np.maximum(cm.sum(1, keepdims=True), 1e-9)
        ax.imshow(rows, vmin=0, vmax=1, cmap="Blues")
        if k <= 12:  # numbers stay readable
            for i in range(k):
                for j in range(k):
                    color = "white" if rows[i, j] > 0.6 else "black"
                    ax.text(
                        j, i, f"{cm[i, j]:g}", ha="center", va="center", fontsize=8, color=color
                    )
        ticks = names if k <= 20 else []
        ax.set_xticks(range(len(ticks)), ticks)
        ax.set_yticks(range(len(ticks)), ticks)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(m)
    return png_data_uri(fig)


def _panel_grid(n: int) -> tuple[Figure, np.ndarray]:
    """One small panel per class, 3 to a row; the unused panels of the last row hidden."""
    cols = min(3, n)
    rows = -(-n // cols)
    fig = Figure(figsize=(4.2 * cols, 2.8 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes


def generator_rows(gan: dict) -> list[dict]:
    """Per class: which generator, why, what the filter rejected, what the class was filled
    with (generated / repeated real images), and the proxy test's candidates."""
    rows = []
    for name, info in gan.items():
        f = info.get("filter") or {}
        sel = info.get("selection") or {}
        rows.append(
            {
                "name": name,
                "generator": info.get("generator", "per-class"),
                "share": sel.get("share"),
                "reason": info.get("generator_reason", ""),
                "candidates": f.get("candidates"),
                "rejected_label": f.get("rejected_label"),
                "rejected_copy": f.get("rejected_copy"),
                "synthetic": info.get("synthetic", f.get("kept")),
                "repeated": info.get("repeated_real", f.get("fallback_real")),
                "proxy": [_proxy_row(c) for c in sel.get("candidates", [])],
            }
        )
    return rows


def _proxy_row(c: dict) -> str:
    """'transfer at 0.5: +0.012 [-0.004, +0.028] balanced, +0.050 recall' for the report."""
    b, m = c["balanced"], c["minority"]
    ci = f" [{b['ci95'][0]:+.3f}, {b['ci95'][1]:+.3f}]" if b.get("ci95") else ""
    return (
        f"{c['generator']} at {c['share']:g}: {b['diff']:+.3f}{ci} balanced accuracy, "
        f"{m['diff']:+.3f} recall"
    )


def loss_chart(gan: dict) -> str | None:
    """Per class: D and G loss of its GAN, or the registration loss of the transfer model."""
    names = list(gan)
    fig, axes = _panel_grid(len(names))
    for ax, name in zip(axes, names, strict=False):
        info = gan[name]
        if "d_loss" in info:
            steps = np.arange(len(info["d_loss"])) * info.get("loss_every", 1)
            ax.plot(steps, info["d_loss"], label="discriminator", lw=1)
            ax.plot(steps, info["g_loss"], label="generator", lw=1)
        elif "variation_model" in info:
            curve = info["variation_model"]["registration_loss"]
            ax.plot(curve, label="pair registration error (transfer)", lw=1)
        else:  # translation or oversampling: nothing was trained for this class
            ax.text(0.5, 0.5, f"{info.get('generator')}: no training curve", ha="center")
        n_train = info.get("train_images", "?")
        ax.set_title(f"class {name} ({n_train} training images)", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    return png_data_uri(fig)


def memorisation_chart(details: dict) -> str:
    """Nearest-training-image distances: generated vs real test images, with the copy line."""
    names = list(details)
    fig, axes = _panel_grid(len(names))
    for ax, name in zip(axes, names, strict=False):
        d = details[name]
        both = np.concatenate([d.generated_nn, d.real_nn])
        bins = np.linspace(0, max(float(both.max()) if len(both) else 1.0, 1e-6), 30)
        ax.hist(d.real_nn, bins, alpha=0.6, density=True, label="real test", color="#4c78a8")
        ax.hist(d.generated_nn, bins, alpha=0.6, density=True, label="generated", color="#f58518")
        if d.threshold is not None:
            ax.axvline(d.threshold, color="black", ls="--", lw=1, label="copy threshold")
        ax.set_title(f"class {name}", fontsize=10)
        ax.set_xlabel("RMS pixel distance to nearest training image")
        ax.legend(fontsize="x-small")
    return png_data_uri(fig)


# ---- sample grids -------------------------------------------------------------------------


def sample_strips(ds: ImageDataset, synthetic: dict[int, torch.Tensor]) -> dict[str, dict]:
    """Per minority class: strips of real training images, generated images, and each shown
    generated image's nearest training image (pixel space), as PNG data URIs."""
    out = {}
    for label, fakes in synthetic.items():
        real = ds.train_images[ds.train_labels == label]
        shown = fakes[:PER_ROW]
        nearest = None
        if len(real) and len(shown):
            _, idx = nearest_distances(_flat(shown), _flat(real))
            nearest = _strip(real[torch.from_numpy(idx)])
        out[ds.class_names[label]] = {
            "real": _strip(real[:PER_ROW]),
            "generated": _strip(shown),
            "nearest": nearest,
            "n_real": len(real),
            "n_generated": len(fakes),
        }
    return out


def _strip(images: torch.Tensor, pad: int = 2) -> str:
    strip = Image.new("RGB", (max(len(images), 1) * (CELL + pad) + pad, CELL + 2 * pad), "white")
    for i, img in enumerate(images):
        tile = to_pil(img).convert("RGB").resize((CELL, CELL), Image.Resampling.NEAREST)
        strip.paste(tile, (pad + i * (CELL + pad), pad))
    buf = io.BytesIO()
    strip.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _flat(images: torch.Tensor) -> np.ndarray:
    return images.reshape(len(images), -1).numpy()


def _nan(x: float | None) -> float:
    return np.nan if x is None else float(x)
