"""The layers' compiled kernels as TensorFlow functions, with their gradients registered.

`FieldEmbedding` and `FMInteraction` call these in training steps on the CPU (`training_kernel`); everywhere
else (predictions, evaluation, SavedModel exports, GPUs, XLA, JAX, distribution strategies, no kernel built)
they run their `keras.ops` path, which computes the same values up to float rounding. Exports never contain these ops, so
stock TensorFlow Serving loads them.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.python.framework.auto_control_deps_utils import register_read_only_resource_op
from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext
from tensorflow.python.ops.resource_variable_ops import variable_accessed

from deepfm_model import kernels


def training_kernel(name: str, training) -> object | None:
    """The op module of layer kernel `name` where it applies to this call, else `None`.

    It applies to training calls (`training` true) not compiled by XLA (which cannot compile them), on a machine
    without GPUs (they are CPU kernels), under the default distribution strategy, where the kernel is built.
    """
    if not training or tf.distribute.has_strategy() or tf.config.list_logical_devices("GPU"):
        return None
    if GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()):
        return None
    return kernels.load(name)


def field_embedding(kernel, table, categorical, multi_categorical, numeric, categorical_offsets, multi_offsets,
                    numeric_offset: int, embedding_dim: int, combiner: str):  # fmt: skip
    """`FieldEmbedding`'s outputs `(embeddings, first_order)` from the `DeepfmFieldEmbedding` kernel.

    Args:
        kernel: the `field_embedding` op module.
        table: the layer's table (a `tf.Variable`); its gradient is row-sparse, as `tf.gather`'s.
        categorical: `(batch, n_cat)` int32 local indices, or `None`.
        multi_categorical: `(batch, n_multi, length)` int32 local indices (0 = padding), or `None`.
        numeric: `(batch, n_numeric)` float32 values, or `None`.
        combiner: `"mean"` or `"sum"` pooling of the multi-valued fields.
    """
    present = next(x for x in (categorical, multi_categorical, numeric) if x is not None)
    batch = tf.shape(present)[0]
    if categorical is None:
        categorical = tf.zeros([batch, 0], tf.int32)
    if multi_categorical is None:
        multi_categorical = tf.zeros([batch, 0, 1], tf.int32)
    if numeric is None:
        numeric = tf.zeros([batch, 0], tf.float32)
    variable_accessed(table)  # the tape watches the table, as it does for a gather from it
    embeddings, first_order, _ = kernel.deepfm_field_embedding(
        table.handle, categorical, multi_categorical, numeric, categorical_offsets=list(categorical_offsets),
        multi_offsets=list(multi_offsets), numeric_offset=numeric_offset, embedding_dim=embedding_dim, combiner=combiner,
    )  # fmt: skip
    return embeddings, first_order


# A read of the table, as `ResourceGather` is: automatic control dependencies need not order it against other reads.
register_read_only_resource_op("DeepfmFieldEmbedding")


@tf.RegisterGradient("DeepfmFieldEmbedding")
def _field_embedding_gradient(op, grad_embeddings, grad_first_order, _):
    kernel = kernels.load("field_embedding")
    if grad_embeddings is None:
        grad_embeddings = tf.zeros_like(op.outputs[0])
    if grad_first_order is None:
        grad_first_order = tf.zeros_like(op.outputs[1])
    values, indices, grad_numeric = kernel.deepfm_field_embedding_grad(
        grad_embeddings, grad_first_order, op.inputs[1], op.inputs[2], op.inputs[3], op.outputs[2],
        categorical_offsets=op.get_attr("categorical_offsets"), multi_offsets=op.get_attr("multi_offsets"),
        numeric_offset=op.get_attr("numeric_offset"), combiner=op.get_attr("combiner"),
    )  # fmt: skip
    table_gradient = tf.IndexedSlices(values, indices, tf.raw_ops.VariableShape(input=op.inputs[0]))
    return [table_gradient, None, None, grad_numeric]


@tf.RegisterGradient("DeepfmFmInteraction")
def _fm_interaction_gradient(op, upstream):
    return kernels.load("fm_interaction").deepfm_fm_interaction_grad(op.inputs[0], upstream)
