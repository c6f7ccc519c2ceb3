"""`make ablation`: variants retrained on a run's snapshot and ranked on its candidates beside its rivals."""

from __future__ import annotations

import json

import pytest

from dags.ops.bench import ablation
from dags.pipeline.evaluation import RELEVANT
from dags.pipeline.run_dir import RunDir
from deepfm_model.spec.features import LABEL, PICKED
from deepfm_model.spec.files import write_json
from deepfm_model.synthetic import generate
from tests.model.conftest import labelled_frame, time_split

DS = "1998-02-01"


def test_variants_are_trained_ranked_and_written_beside_the_rivals(tmp_path, monkeypatch, capsys):
    run = RunDir(tmp_path / "artifacts", DS)
    splits = time_split(labelled_frame(generate(n_users=80, n_movies=60, n_events=2500, seed=1)))
    for name, split in zip(("train", "valid", "test"), splits, strict=True):
        run.split(name).parent.mkdir(parents=True, exist_ok=True)
        split.assign(**{PICKED: 1}).to_parquet(run.split(name), index=False)
    run.ranking_dir.mkdir(parents=True)
    test = splits[2].drop_duplicates(["user_id", "movie_id"])  # one candidate per pair, as `evaluate` writes them
    test = test[test.groupby("user_id")[LABEL].transform("max") == 1]  # users with a positive
    test.assign(**{RELEVANT: test[LABEL] == 1}).to_parquet(run.ranking_candidates, index=False)
    rival = {"ndcg_at_10": 0.1, "ndcg_at_10_ci": [0.05, 0.15], "recall_at_10": 0.2}
    write_json(run.metrics, {"full_ranking": {"models": {"deepfm": rival, "popularity": rival}}})
    monkeypatch.setenv("DEEPFM_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("DEEPFM_EPOCHS", "1")

    ablation.main(["--ds", DS, "--variants", "deepfm,rated_only"])
    results = json.loads((tmp_path / "artifacts" / "bench" / "ablation.json").read_text())
    assert set(results["variants"]) == {"deepfm", "rated_only"} and set(results["rivals"]) == {"popularity"}
    for row in results["variants"].values():
        assert 0 <= row["ndcg_at_10_ci"][0] <= row["ndcg_at_10"] <= row["ndcg_at_10_ci"][1] <= 1
        assert 0 < row["test_auc"] < 1 and row["epochs"] == 1
    assert results["variants"]["deepfm"]["auc_signal"] == "like"
    assert results["variants"]["rated_only"]["auc_signal"] == "probability"  # one head
    assert "popularity" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        ablation.main(["--ds", DS, "--variants", "no_such_variant"])
