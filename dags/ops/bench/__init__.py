"""The benchmarks: tooling over every layer of the product; nothing of the product imports it. One module a benchmark:

- `train`: `make bench-train`, DeepFM training throughput against a plain Keras DeepFM (`artifacts/bench/train.json`);
- `features`: `make bench-features`, Feast historical retrieval and online reads (`artifacts/bench/features.json`);
- `serving`: `make bench-serving`, client import, encoding, gRPC latency (`artifacts/bench/serving.json`);
- `rank`: `make bench-rank`, `rank(user, n candidates)`, fast reader against plain Feast (`artifacts/bench/rank.json`);
- `scale`: `make bench-scale`, the whole nightly run stage by stage on generated sources (`artifacts/bench/scale.json`);
- `ablation`: `make ablation`, each part of the model's training removed in turn (`artifacts/bench/ablation.json`).

Beside them: `report`, the one helper they share (timing, percentiles, the machine, tables, the JSON result),
and `sample_model`, a small SavedModel with the serving signature (the serving tests and `serving` serve it).
Each runs as `python -m dags.ops.bench.<module>`.
"""
