"""The full-catalogue top-N evaluation in the model report: a bar chart and a table on `report/index.html`.

`full_ranking` is the mapping the run records under that key in `metrics.json`: `users`, `sampled_from`,
`candidates`, `window_start` and `models` (name -> metrics, each with its 95% interval as `<metric>_ci`, and
`params` for a tuned baseline). `models` is open: every model there is drawn, in its order.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from pathlib import Path

from deepfm_model.layout import REPORT_INDEX
from deepfm_model.spec.files import staged_path, write_text

FULL_RANKING_IMAGE = "full_ranking.png"
FULL_RANKING_TITLE = "Full-catalogue top-N"
METRICS = (("ndcg_at_10", "NDCG@10"), ("recall_at_10", "Recall@10"), ("recall_at_50", "Recall@50"), ("mrr", "MRR"))
SERVED_MODELS = ("recommend", "deepfm")  # the model as served (retrieval then DeepFM) and DeepFM alone; not baselines
SECTION_START, SECTION_END = "<!-- full-ranking -->", "<!-- /full-ranking -->"
EMPTY_PAGE = "<!doctype html><html><head><meta charset='utf-8'></head><body></body></html>"
_SERVED_COLOURS = ("#1f4e9c", "#e8731a")
_BASELINE_GREYS = ("#8c8c8c", "#b3b3b3", "#6e6e6e", "#cfcfcf", "#5a5a5a")
_BASELINE_HATCHES = ("//", "..", "xx", "\\\\", "++")


def finite(value) -> float | None:
    """`value` as a float when it is a finite number, else `None`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def interval(model: Mapping, metric: str) -> tuple[float, float] | None:
    """The 95% interval `<metric>_ci` of `model`, or `None` when it is absent or not two finite numbers."""
    ci = model.get(f"{metric}_ci")
    if not isinstance(ci, list | tuple) or len(ci) != 2:
        return None
    low, high = finite(ci[0]), finite(ci[1])
    return (low, high) if low is not None and high is not None else None


def details(model: Mapping) -> dict:
    """What a model's row says besides its metrics: a baseline's `params`, the served model's retrieval facts.

    Other metrics (`<name>` with a `<name>_ci`), the user count and anything that is not a plain value (a tuning
    grid, a comparison) are left out.
    """
    params = model.get("params") if isinstance(model.get("params"), Mapping) else {}
    skipped = {"params", "users", *(key for key, _ in METRICS)}
    extra = {
        k: v
        for k, v in model.items()
        if k not in skipped and not k.endswith("_ci") and f"{k}_ci" not in model and isinstance(v, str | int | float)
    }
    return {**params, **extra}


def models_of(full_ranking: Mapping) -> dict[str, Mapping]:
    """The models of `full_ranking` that have a metrics mapping, in their order."""
    models = full_ranking.get("models")
    return {str(k): v for k, v in models.items() if isinstance(v, Mapping)} if isinstance(models, Mapping) else {}


def write_full_ranking_report(full_ranking: dict, report_dir: Path) -> Path:
    """Draw `full_ranking.png` into `report_dir` and add its section to `report_dir/index.html`.

    The section (heading, table of every model's metrics with their intervals and a baseline's params, and the
    image) goes before `</body>`, replacing one an earlier call added; without an `index.html` (no `write_report`
    yet) a page holding only the section is written.

    Returns:
        Path of the PNG.
    """
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    image = _draw(full_ranking, report_dir / FULL_RANKING_IMAGE)
    index = report_dir / REPORT_INDEX
    page = index.read_text() if index.is_file() else EMPTY_PAGE
    start, end = page.find(SECTION_START), page.find(SECTION_END)
    if start != -1 and end > start:
        page = page[:start] + page[end + len(SECTION_END) :]
    section = _section(full_ranking)
    cut = page.rfind("</body>")
    page = page[:cut] + section + page[cut:] if cut != -1 else page + section
    write_text(index, page)
    return image


def _title(full_ranking: Mapping) -> str:
    users, sampled = full_ranking.get("users"), full_ranking.get("sampled_from")
    title = f"{FULL_RANKING_TITLE} over {users if users is not None else '?'} users"
    return title + (f" (sampled from {sampled})" if sampled not in (None, users) else "")


def _draw(full_ranking: Mapping, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = models_of(full_ranking)
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / max(len(models), 1)
    served_count = baseline_count = 0
    for i, (name, model) in enumerate(models.items()):
        xs, heights, below, above = [], [], [], []
        for j, (key, _) in enumerate(METRICS):
            value = finite(model.get(key))
            if value is None:
                continue
            ci = interval(model, key)
            xs.append(j - 0.4 + width * (i + 0.5))
            heights.append(value)
            below.append(max(value - ci[0], 0.0) if ci else 0.0)
            above.append(max(ci[1] - value, 0.0) if ci else 0.0)
        if not xs:  # nothing to draw (no metric recorded): the table says so
            continue
        if name in SERVED_MODELS:
            style = {"color": _SERVED_COLOURS[served_count % len(_SERVED_COLOURS)], "edgecolor": "black"}
            served_count += 1
        else:
            k = baseline_count % len(_BASELINE_GREYS)
            style = {"color": _BASELINE_GREYS[k], "hatch": _BASELINE_HATCHES[k], "edgecolor": "#404040"}
            baseline_count += 1
        label = f"{name} (model)" if name in SERVED_MODELS else f"{name} (baseline)"
        ax.bar(xs, heights, width * 0.95, yerr=[below, above], capsize=3, label=label, linewidth=0.6, **style)
    ax.set_xticks(range(len(METRICS)), [title for _, title in METRICS])
    ax.set(ylabel="score (95% interval)", title=_title(full_ranking))
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
    fig.tight_layout()
    try:
        with staged_path(path) as staged:  # atomic, as every report file: a reader never sees half an image
            fig.savefig(staged, dpi=100, format="png")
    finally:
        plt.close(fig)
    return path


def _cell(model: Mapping, metric: str) -> str:
    value = finite(model.get(metric))
    if value is None:
        return "<td>–</td>"
    ci = interval(model, metric)
    return f"<td>{value:.4f}" + (f" <small>[{ci[0]:.4f}, {ci[1]:.4f}]</small>" if ci else "") + "</td>"


def _section(full_ranking: Mapping) -> str:
    e = html.escape
    head = "".join(f"<th>{e(title)}</th>" for _, title in METRICS)
    rows = []
    for name, model in models_of(full_ranking).items():
        kind = "model" if name in SERVED_MODELS else "baseline"
        params = ", ".join(f"{k}={v}" for k, v in details(model).items())
        cells = "".join(_cell(model, key) for key, _ in METRICS)
        rows.append(f"<tr><td><b>{e(name)}</b> <small>({kind})</small></td>{cells}<td>{e(params) or '–'}</td></tr>")
    facts = [f"{k.replace('_', ' ')}: {full_ranking[k]}" for k in ("candidates", "window_start") if full_ranking.get(k)]
    return (
        f'{SECTION_START}<section id="full-ranking"><h2>{e(FULL_RANKING_TITLE)}</h2>'
        f"<p>{e(_title(full_ranking))}" + "".join(f"<br>{e(f)}" for f in facts) + "</p>"
        f"<table><thead><tr><th>Model</th>{head}<th>Params</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f'<img src="{FULL_RANKING_IMAGE}" alt="{e(FULL_RANKING_TITLE)}"></section>{SECTION_END}'
    )
