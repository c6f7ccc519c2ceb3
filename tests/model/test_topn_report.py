"""The full-catalogue top-N section of the model report: the bar chart and the table on `report/index.html`."""

from __future__ import annotations

import re
from pathlib import Path

from deepfm_model.layout import REPORT_INDEX
from deepfm_model.topn_report import FULL_RANKING_IMAGE, write_full_ranking_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def scores(ndcg: float) -> dict:
    """One model's metrics with their 95% intervals, as the evaluation records them."""
    values = {"ndcg_at_10": ndcg, "recall_at_10": ndcg / 2, "recall_at_50": ndcg * 1.5, "mrr": ndcg * 1.25}
    return {
        **values,
        **{f"{key}_ci": [round(value - 0.02, 6), round(value + 0.03, 6)] for key, value in values.items()},
    }


FULL_RANKING = {
    "users": 153,
    "sampled_from": 153,
    "candidates": "every catalogue item the user had not rated before the window",
    "window_start": "1998-03-30T00:00:00+00:00",
    "models": {
        "deepfm": scores(0.25),
        "recommend": {**scores(0.2625), "retrieval_recall": 0.8, "retrieval_cut": 300},
        "popularity": {**scores(0.2), "params": {"days": 30, "positives_only": True}},
        "item_knn": {**scores(0.22), "params": {"neighbours": 50}},
        "ease": {**scores(0.24), "params": {"l2": 200}},
    },
}


def section(page: str) -> str:
    (found,) = re.findall(r"<h2>Full-catalogue top-N</h2>.*?</section>", page, flags=re.S)
    return found


def test_the_chart_is_a_png_and_the_section_is_added_once(tmp_path: Path) -> None:
    report = tmp_path / "report"
    report.mkdir()
    (report / REPORT_INDEX).write_text("<html><body><h1>DeepFM evaluation</h1><img src='roc.png'></body></html>")
    image = write_full_ranking_report(FULL_RANKING, report)
    assert image == report / FULL_RANKING_IMAGE and image.read_bytes()[:8] == PNG_MAGIC
    width, height = (int.from_bytes(image.read_bytes()[i : i + 4], "big") for i in (16, 20))
    assert width > 2 * height  # a row of metric groups: the run page shows it wide
    write_full_ranking_report(FULL_RANKING, report)  # a second call replaces the section, it does not add one
    page = (report / REPORT_INDEX).read_text()
    assert page.count("Full-catalogue top-N</h2>") == 1 and page.count(f'src="{FULL_RANKING_IMAGE}"') == 1
    assert page.index("<h1>DeepFM evaluation</h1>") < page.index("Full-catalogue top-N") < page.index("</body>")
    assert page.endswith("</body></html>") and "<img src='roc.png'>" in page  # the report's own page is kept
    assert not list(report.glob(".*.partial"))


def test_the_table_has_every_model_with_its_intervals_and_params(tmp_path: Path) -> None:
    write_full_ranking_report(FULL_RANKING, tmp_path)
    table = section((tmp_path / REPORT_INDEX).read_text())
    assert "over 153 users" in table and "1998-03-30" in table
    assert [*re.findall(r"<tr><td><b>(\w+)</b>", table)] == list(FULL_RANKING["models"])  # in the given order
    recommend = re.search(r"<tr><td><b>recommend</b>.*?</tr>", table).group(0)
    assert "0.2625 <small>[0.2425, 0.2925]</small>" in recommend  # NDCG@10 with its interval
    assert "0.3281 <small>[0.3081, 0.3581]</small>" in recommend  # MRR
    assert "retrieval_cut=300" in recommend and "(model)" in recommend
    ease = re.search(r"<tr><td><b>ease</b>.*?</tr>", table).group(0)
    assert "(baseline)" in ease and "l2=200" in ease and "0.2400 <small>[0.2200, 0.2700]</small>" in ease
    assert "days=30, positives_only=True" in table


def test_a_model_without_intervals_or_metrics_is_shown_without_them(tmp_path: Path) -> None:
    full_ranking = {
        "users": 12,
        "sampled_from": 40,
        "models": {
            "recommend": {"ndcg_at_10": 0.3, "recall_at_10": None, "mrr": float("nan")},
            "new_baseline": {
                "ndcg_at_10": 0.1,
                "ndcg_at_10_ci": [0.05],
                "params": {"k": 5},
                "users": 12,
                "trials": [{"params": {"k": 5}, "ndcg_at_10": 0.1}],
            },  # fmt: skip
            "not_scored": {},
            "malformed": "n/a",
        },
    }
    image = write_full_ranking_report(full_ranking, tmp_path)  # no index.html yet: a page with the section
    assert image.read_bytes()[:8] == PNG_MAGIC
    table = section((tmp_path / REPORT_INDEX).read_text())
    assert "over 12 users (sampled from 40)" in table
    recommend = re.search(r"<tr><td><b>recommend</b>.*?</tr>", table).group(0)
    assert "<td>0.3000</td><td>–</td><td>–</td><td>–</td>" in recommend
    assert "<td>0.1000</td>" in table and "not_scored" in table and "malformed" not in table
    new_baseline = re.search(r"<tr><td><b>new_baseline</b>.*?</tr>", table).group(0)
    assert new_baseline.endswith("<td>k=5</td></tr>")  # its params; not its metrics, user count or tuning trials
    assert write_full_ranking_report({"users": 0, "models": {}}, tmp_path).is_file()  # nothing evaluated at all
