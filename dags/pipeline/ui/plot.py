"""Test AUC and logloss over the nightly runs, and the full-catalogue NDCG@10 of each model, as inline SVG drawn
on the server.

`metrics_svg`: two panels share the time axis (oldest run on the left): AUC above with the blessing floor dashed,
logloss below. A filled point is a blessed candidate, a hollow one a rejected candidate; a red mark on the axis is
a run that trained nothing (stopped by bad data, or failed before training); the version serving now is ringed and
labelled. `full_ranking_svg`: one line per model of the runs' full-catalogue top-N evaluations (the model solid,
baselines dashed), on the same time axis. Colours are CSS classes (`plot-*`), so the plots follow the page's light
or dark theme.
"""

from __future__ import annotations

import math
from html import escape

from deepfm_model.topn_report import SERVED_MODELS, finite, interval, models_of

WIDTH, PANEL_HEIGHT, GAP = 760, 130, 40
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 22, 50
SERIES_COLOURS = 8  # `plot-series-0` .. `-7` in the stylesheet; the served models take the first ones


def metrics_svg(runs: list[dict], auc_floor: float, serving_version: int | None) -> str:
    """SVG of test AUC and logloss of `runs` (summaries, any order), with the floor and the serving version."""
    runs = sorted(runs, key=lambda r: r["ds"])
    if not any(r["test_auc"] is not None for r in runs):
        return _message("No trained runs yet")
    height = TOP + 2 * PANEL_HEIGHT + GAP + BOTTOM
    plot_width = WIDTH - LEFT - RIGHT
    step = plot_width / max(len(runs), 1)
    xs = [LEFT + step * (i + 0.5) for i in range(len(runs))]
    parts = [
        f'<svg class="plot" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="Test AUC and logloss over {len(runs)} runs">'
    ]
    auc_top = TOP
    loss_top = TOP + PANEL_HEIGHT + GAP
    parts += _panel(runs, xs, "test_auc", "Test AUC", auc_top, floor=auc_floor, serving_version=serving_version)
    parts += _panel(runs, xs, "test_logloss", "Test logloss", loss_top, floor=None, serving_version=serving_version)
    parts += _time_axis(runs, xs, loss_top + PANEL_HEIGHT)
    parts.append(_legend(height - 8))
    parts.append("</svg>")
    return "".join(parts)


def full_ranking_svg(runs: list[dict], metric: str = "ndcg_at_10", title: str = "Full-catalogue NDCG@10") -> str:
    """SVG of `metric` of every model in the `full_ranking` of `runs` (summaries, any order), a line per model.

    Models appear in the order the runs list them, oldest run first (a baseline added later comes last); a run
    without a full-catalogue evaluation has no point, and each model's line joins the runs that have one.
    """
    runs = sorted(runs, key=lambda r: r["ds"])
    series: dict[str, list[tuple[int, float, tuple[float, float] | None]]] = {}
    for i, run in enumerate(runs):
        for name, model in models_of(run.get("full_ranking") or {}).items():
            value = finite(model.get(metric))
            if value is not None:
                series.setdefault(name, []).append((i, value, interval(model, metric)))
    if not series:
        return _message("No run has a full-catalogue top-N evaluation yet")
    served = [name for name in SERVED_MODELS if name in series]
    colour = {name: i % SERIES_COLOURS for i, name in enumerate([*served, *(n for n in series if n not in served)])}
    legend, legend_rows = _series_legend(series, served, colour)
    height = TOP + PANEL_HEIGHT + 34 + 18 * legend_rows
    plot_width = WIDTH - LEFT - RIGHT
    step = plot_width / len(runs)
    xs = [LEFT + step * (i + 0.5) for i in range(len(runs))]
    values = [value for points in series.values() for _, value, _ in points]
    low, high = min(values), max(values)
    pad = max((high - low) * 0.15, 0.01)
    low, high = low - pad, high + pad
    bottom = TOP + PANEL_HEIGHT

    def y(value: float) -> float:
        return bottom - (value - low) / (high - low) * PANEL_HEIGHT

    parts = [
        f'<svg class="plot" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(title)} of {len(series)} models over {len(runs)} runs">',
        f'<text class="plot-title" x="{LEFT}" y="{TOP - 4}">{escape(title)}</text>',
    ]
    parts += _grid(low, high, y)
    parts.append(f'<line class="plot-axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" y2="{bottom}"/>')
    for name, points in series.items():
        kind = "plot-served" if name in served else "plot-baseline"
        parts.append(f'<g class="plot-model plot-series-{colour[name]} {kind}" data-model="{escape(name)}">')
        if len(points) > 1:
            path = " ".join(f"{'M' if j == 0 else 'L'}{xs[i]:.1f},{y(v):.1f}" for j, (i, v, _) in enumerate(points))
            parts.append(f'<path class="plot-model-line" d="{path}"><title>{escape(name)}</title></path>')
        for i, value, ci in points:
            label = f"{runs[i]['ds']}: {name} {value:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
            parts.append(
                f'<circle class="plot-model-point" cx="{xs[i]:.1f}" cy="{y(value):.1f}" '
                f'r="{4.5 if name in served else 3.5}"><title>{escape(label)}</title></circle>'
            )
        parts.append("</g>")
    parts += _time_axis(runs, xs, bottom)
    parts.append(f'<g transform="translate(0,{bottom + 44})">{legend}</g>')
    parts.append("</svg>")
    return "".join(parts)


def _series_legend(series: dict, served: list[str], colour: dict[str, int]) -> tuple[str, int]:
    """The legend of `full_ranking_svg`, wrapped into rows 18 units apart: its SVG and its row count."""
    x, row, parts = LEFT, 0, []
    for name in series:
        text = f"{name} (model)" if name in served else name
        width = 44 + 7.5 * len(text)
        if x + width > WIDTH - RIGHT and x > LEFT:
            x, row = LEFT, row + 1
        kind = "plot-served" if name in served else "plot-baseline"
        parts.append(
            f'<g class="plot-series-{colour[name]} {kind}" transform="translate({x},{18 * row})">'
            f'<line class="plot-model-line" x1="-4" x2="18" y1="-4" y2="-4"/>'
            f'<text class="plot-text" x="24" y="0">{escape(text)}</text></g>'
        )
        x += width
    return "".join(parts), row + 1


def _message(text: str) -> str:
    return (
        f'<svg class="plot" viewBox="0 0 {WIDTH} 80" role="img" aria-label="{escape(text)}">'
        f'<text class="plot-text" x="{WIDTH / 2}" y="45" text-anchor="middle">{escape(text)}</text></svg>'
    )


def _time_axis(runs: list[dict], xs: list[float], axis_y: float) -> list[str]:
    """The dates under a panel: every label when they fit, else every k-th."""
    every = max(1, math.ceil(len(runs) / ((WIDTH - LEFT - RIGHT) / 90)))
    return [
        f'<text class="plot-text" x="{x:.1f}" y="{axis_y + 18}" text-anchor="middle">{run["ds"]}</text>'
        for i, (x, run) in enumerate(zip(xs, runs, strict=True))
        if i % every == 0 or i == len(runs) - 1
    ]


def _grid(low: float, high: float, y) -> list[str]:
    """Horizontal grid lines at round values between `low` and `high`, labelled on the left."""
    parts = []
    for tick in _ticks(low, high):
        parts.append(
            f'<line class="plot-grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>'
        )
        parts.append(
            f'<text class="plot-text" x="{LEFT - 8}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:.3g}</text>'
        )
    return parts


def _panel(runs: list[dict], xs: list[float], key: str, title: str, top: float, *, floor: float | None,
           serving_version: int | None) -> list[str]:  # fmt: skip
    values = [r[key] for r in runs if r[key] is not None]
    low, high = (
        min(values + ([floor] if floor is not None else [])),
        max(values + ([floor] if floor is not None else [])),
    )
    pad = max((high - low) * 0.15, 0.01)
    low, high = low - pad, high + pad
    bottom = top + PANEL_HEIGHT

    def y(value: float) -> float:
        return bottom - (value - low) / (high - low) * PANEL_HEIGHT

    parts = [f'<text class="plot-title" x="{LEFT}" y="{top - 4}">{escape(title)}</text>', *_grid(low, high, y)]
    parts.append(f'<line class="plot-axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" y2="{bottom}"/>')
    if floor is not None:
        parts.append(
            f'<line class="plot-floor" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(floor):.1f}" y2="{y(floor):.1f}"/>'
        )
        parts.append(
            f'<text class="plot-floor-text" x="{WIDTH - RIGHT - 4}" y="{y(floor) - 5:.1f}" text-anchor="end">'
            f"blessing floor {floor:.2f}</text>"
        )
    points = [(x, y(r[key])) for x, r in zip(xs, runs, strict=True) if r[key] is not None]
    if len(points) > 1:
        path = " ".join(f"{'M' if i == 0 else 'L'}{px:.1f},{py:.1f}" for i, (px, py) in enumerate(points))
        parts.append(f'<path class="plot-line" d="{path}"/>')
    for x, run in zip(xs, runs, strict=True):
        value = run[key]
        if value is None:
            if run["state"] == "failed":
                parts.append(
                    f'<path class="plot-failed" d="M{x - 5:.1f},{bottom - 10} L{x + 5:.1f},{bottom} '
                    f'M{x + 5:.1f},{bottom - 10} L{x - 5:.1f},{bottom}"><title>{run["ds"]}: '
                    f"{escape(run.get('reason') or 'failed')}</title></path>"
                )
            continue
        kind = "plot-blessed" if run["blessed"] else "plot-rejected"
        label = f"{run['ds']}: {title.lower()} {value:.4f}" + (
            f", version {run['model_version']}" if run["model_version"] is not None else ""
        )
        parts.append(
            f'<circle class="{kind}" cx="{x:.1f}" cy="{y(value):.1f}" r="5"><title>{escape(label)}</title></circle>'
        )
        if serving_version is not None and run["model_version"] == serving_version:
            parts.append(f'<circle class="plot-serving" cx="{x:.1f}" cy="{y(value):.1f}" r="10"/>')
            if floor is not None:  # label once, in the upper panel
                parts.append(
                    f'<text class="plot-serving-text" x="{x:.1f}" y="{y(value) - 15:.1f}" text-anchor="middle">'
                    f"serving v{serving_version}</text>"
                )
    return parts


def _legend(y: float) -> str:
    items = [
        ('<circle class="plot-blessed" cx="0" cy="-4" r="5"/>', "blessed"),
        ('<circle class="plot-rejected" cx="0" cy="-4" r="5"/>', "rejected"),
        ('<path class="plot-failed" d="M-5,-9 L5,1 M5,-9 L-5,1"/>', "no model (run stopped)"),
        ('<circle class="plot-serving" cx="0" cy="-4" r="8"/>', "serving now"),
        ('<line class="plot-floor" x1="-10" x2="10" y1="-4" y2="-4"/>', "blessing floor"),
    ]
    x, parts = LEFT, []
    for mark, text in items:
        parts.append(f'<g transform="translate({x},{y})">{mark}<text class="plot-text" x="14" y="0">{text}</text></g>')
        x += 30 + 7 * len(text)
    return "".join(parts)


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    """About `count` round values between `low` and `high`."""
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + 1e-12:
        ticks.append(round(value, 10))
        value += step
    return ticks
