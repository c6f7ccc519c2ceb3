"""Keras 3's `fit` under `MultiWorkerMirroredStrategy`: two fixes to its TensorFlow trainer, installed on demand.

Keras 3 (3.12 here) cannot `fit` across workers on the TensorFlow backend; two bugs stop it:

- keras-team/keras#20329: before the first step, `_maybe_symbolic_build` reduces a whole input batch with
  `strategy.reduce("MEAN", batch)` to get a sample to build on. `CollectiveAllReduceStrategy` cannot reduce a
  nested structure (our inputs are a dict), and fails with "Attempt to convert a value ({'categorical':
  PerReplica...}) ... to a Tensor". The fix builds on this worker's own replica batch. The build needs only
  shapes and dtypes, and every replica's batch has the same ones.
- tensorflow/tensorflow#72388: after each step, `reduce_per_replica` reduces the step's logs with
  `strategy.reduce("MEAN", v, axis=0)`. The logs are scalars, so the step fails with "Invalid reduction
  dimension 0 for input with 0 dimensions". The fix reduces a scalar with `axis=None` and anything else as
  before.

`install` patches both, and only for `CollectiveAllReduceStrategy`. Other strategies, and no strategy at all,
take Keras's own code. `train.distribution_strategy` calls it when `TF_CONFIG` names several workers.
`tests/model/test_multi_worker.py` trains one model on two worker processes and checks:
- the two workers end with the same weights;
- the test metrics are within noise of a single-process run.
"""

from __future__ import annotations

import functools


@functools.cache
def install() -> None:
    """Patch Keras's TensorFlow trainer for `CollectiveAllReduceStrategy` (once per process)."""
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    stock_build = trainer.TensorFlowTrainer._maybe_symbolic_build
    stock_reduce = trainer.reduce_per_replica

    def multi_worker(strategy) -> bool:
        return strategy is not None and trainer._collective_all_reduce_multi_worker(strategy)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is None or not multi_worker(self._distribute_strategy):
            return stock_build(self, iterator=iterator, data_batch=data_batch)
        local = self.distribute_strategy.experimental_local_results
        for _, _, it in iterator:
            batch = next(it)
            data_batch = tree.map_structure(
                lambda x: local(x)[0] if isinstance(x, tf.distribute.DistributedValues) else x, batch
            )
            break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not multi_worker(strategy):
            return stock_reduce(values, strategy, reduction)

        def reduce(value):
            if not isinstance(value, tf.distribute.DistributedValues):
                return value
            rank = strategy.experimental_local_results(value)[0].shape.rank
            return strategy.reduce("MEAN", value, axis=None if rank == 0 else 0)

        return tree.map_structure(reduce, values)

    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    trainer.reduce_per_replica = reduce_per_replica
