"""One embedding table for every field: categorical, multi-valued and numeric."""

from __future__ import annotations

import keras
from keras import ops

from deepfm_model.config import MULTI_VALUE_COMBINERS
from deepfm_model.layers.masked_pooling import MaskedPooling


@keras.saving.register_keras_serializable(package="deepfm")
class FieldEmbedding(keras.layers.Layer):
    """Field embeddings `v_i` and first-order weights `w_i` from one concatenated table and one gather.

    Each row of the table, of width `embedding_dim + 1`, belongs to one feature value: its first
    `embedding_dim` channels are the value's embedding `v` (shared by the FM and the deep part, as in
    DeepFM), the last channel its first-order weight `w`. Fields own consecutive blocks of rows; a field's
    local index is shifted by the field's offset, so all fields are looked up with a single gather.

    - categorical field `i` with local index `k`: `v_i = E[o_i + k, :d]`, `w_i = E[o_i + k, d]`;
    - multi-valued field with local indices `k_1..k_L` (0 = padding): the masked mean (or sum) of the rows
      `E[o_i + k_l]` over the non-padding slots (`MaskedPooling`); no value gives zeros;
    - a multi-valued field may share a categorical field's rows (`multi_shared_with`): its local index `k >= 1`
      names that field's index `k - 1` (padding 0 and OOV 1 of the multi-valued lookup are the categorical
      lookup's OOV 0 shifted by one), so the user's recent movie ids and the candidate movie id are one
      embedding per movie, and the FM term between them is an item-to-item model;
    - numeric field with normalised value `x`: a single row `E[o_i]` scaled by the value, so
      `v_i = x * E[o_i, :d]` and `w_i = x * E[o_i, d]` (the FM of Rendle 2010 for real-valued features).

    Field order of the outputs: categorical fields, then multi-valued fields, then numeric fields.

    Args:
        categorical_sizes: rows (vocabulary size incl. out-of-vocabulary) of each categorical field.
        multi_categorical_sizes: rows of each multi-valued field (incl. padding row 0 and OOV).
        num_numeric: number of numeric fields.
        embedding_dim: size `d` of each embedding vector.
        embeddings_initializer: initialiser of the table.
        l2: L2 penalty on the table.
        multi_value_combiner: how a multi-valued field's rows combine, `"mean"` or `"sum"`.
        multi_shared_with: per multi-valued field, the categorical field whose rows it uses, or -1 for rows of
            its own (empty: none shared). A shared field's size must be the categorical field's plus one.
        **kwargs: base `keras.layers.Layer` arguments.

    Inputs (a dict; keys with no field may be omitted):
        "categorical": `(batch, n_categorical)` int, local indices.
        "multi_categorical": `(batch, n_multi, length)` int, local indices, 0 = padding.
        "numeric": `(batch, n_numeric)` float, normalised values.
    Outputs: a tuple `(embeddings, first_order)` of shapes `(batch, fields, d)` and `(batch, fields)`.

    Training steps under TensorFlow on the CPU run the layer as one compiled kernel each way
    (`kernels/field_embedding.cc`: rows read straight into the two outputs; the table's gradient written as
    `tf.gather`'s would be, one row per lookup); everywhere else, and always for inference and exports, it
    runs the `keras.ops` below. Both give the same values up to float rounding.
    """

    def __init__(
        self,
        categorical_sizes=(),
        multi_categorical_sizes=(),
        num_numeric: int = 0,
        embedding_dim: int = 16,
        embeddings_initializer="random_normal",
        l2: float = 0.0,
        multi_value_combiner: str = "mean",
        multi_shared_with=(),
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.categorical_sizes = tuple(int(s) for s in categorical_sizes)
        self.multi_categorical_sizes = tuple(int(s) for s in multi_categorical_sizes)
        for name, sizes in (
            ("categorical_sizes", self.categorical_sizes),
            ("multi_categorical_sizes", self.multi_categorical_sizes),
        ):
            if any(s <= 0 for s in sizes):
                raise ValueError(f"`{name}` must all be positive. Received: `{name}={list(sizes)}`")
        if not isinstance(num_numeric, int) or num_numeric < 0:
            raise ValueError(f"`num_numeric` must be a non-negative int. Received: `num_numeric={num_numeric!r}`")
        if not isinstance(embedding_dim, int) or embedding_dim <= 0:
            raise ValueError(f"`embedding_dim` must be positive. Received: `embedding_dim={embedding_dim!r}`")
        if l2 < 0:
            raise ValueError(f"`l2` must be non-negative. Received: `l2={l2}`")
        if multi_value_combiner not in MULTI_VALUE_COMBINERS:
            raise ValueError(
                f"`multi_value_combiner` must be one of {MULTI_VALUE_COMBINERS}. "
                f"Received: `multi_value_combiner={multi_value_combiner!r}`"
            )
        if not self.categorical_sizes and not self.multi_categorical_sizes and num_numeric == 0:
            raise ValueError("`FieldEmbedding` needs at least one field. Received no field sizes.")
        self.num_numeric = num_numeric
        self.embedding_dim = embedding_dim
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.l2 = l2
        n_cat, n_multi = len(self.categorical_sizes), len(self.multi_categorical_sizes)
        self.multi_shared_with = tuple(int(i) for i in multi_shared_with) or (-1,) * n_multi
        if len(self.multi_shared_with) != n_multi or any(not -1 <= i < n_cat for i in self.multi_shared_with):
            raise ValueError(
                f"`multi_shared_with` must name a categorical field (0..{n_cat - 1}) or -1 for each of the {n_multi} "
                f"multi-valued fields. Received: `multi_shared_with={list(multi_shared_with)}`"
            )
        for j, i in enumerate(self.multi_shared_with):
            if i >= 0 and (self.multi_categorical_sizes[j] != self.categorical_sizes[i] + 1 or i == 0):
                raise ValueError(
                    f"Multi-valued field {j} shares categorical field {i}: it must not be the first field and "
                    f"its size must be that field's plus one. Received: `categorical_sizes={list(self.categorical_sizes)}`, "
                    f"`multi_categorical_sizes={list(self.multi_categorical_sizes)}`"
                )
        own = [
            0 if i >= 0 else size for i, size in zip(self.multi_shared_with, self.multi_categorical_sizes, strict=True)
        ]
        sizes = self.categorical_sizes + tuple(own) + (1,) * num_numeric
        offsets = [0]
        for size in sizes[:-1]:
            offsets.append(offsets[-1] + size)
        self._categorical_offsets = offsets[:n_cat]
        # A shared field's index k >= 1 names the categorical field's row k - 1; its padding (0) is never read.
        self._multi_offsets = [
            self._categorical_offsets[i] - 1 if i >= 0 else offset
            for i, offset in zip(self.multi_shared_with, offsets[n_cat : n_cat + n_multi], strict=True)
        ]
        self._numeric_offset = offsets[n_cat + n_multi] if num_numeric else sum(sizes)
        self.total_rows = sum(sizes)
        self.multi_value_combiner = multi_value_combiner
        self.pooling = MaskedPooling(combiner=multi_value_combiner, padding_index=0, name="masked_pooling")

    @property
    def num_fields(self) -> int:
        return len(self.categorical_sizes) + len(self.multi_categorical_sizes) + self.num_numeric

    def build(self, input_shape=None) -> None:
        self.table = self.add_weight(
            name="table",
            shape=(self.total_rows, self.embedding_dim + 1),
            initializer=self.embeddings_initializer,
            regularizer=keras.regularizers.L2(self.l2) if self.l2 > 0 else None,
            # Under a mixed-precision policy the table is not cast whole on each read (a copy of the whole
            # table per step): `_gather` casts only the gathered rows to the compute dtype.
            autocast=False,
        )
        self.built = True

    def call(self, inputs, training=None):
        n_cat, n_multi = len(self.categorical_sizes), len(self.multi_categorical_sizes)
        kernel = self._training_kernel(training)
        if kernel is not None:
            from deepfm_model.kernels import layer_ops

            return layer_ops.field_embedding(
                kernel, self.table.value,
                ops.cast(inputs["categorical"], "int32") if n_cat else None,
                ops.cast(inputs["multi_categorical"], "int32") if n_multi else None,
                ops.cast(inputs["numeric"], "float32") if self.num_numeric else None,
                self._categorical_offsets, self._multi_offsets, self._numeric_offset, self.embedding_dim,
                self.multi_value_combiner,
            )  # fmt: skip
        pieces, flat = [], []
        if n_cat:
            categorical = ops.cast(inputs["categorical"], "int32")  # (batch, n_cat)
            flat.append(categorical + ops.convert_to_tensor(self._categorical_offsets, "int32"))
        if n_multi:
            multi = ops.cast(inputs["multi_categorical"], "int32")  # (batch, n_multi, length)
            length = ops.shape(multi)[-1]
            shifted = multi + ops.reshape(ops.convert_to_tensor(self._multi_offsets, "int32"), (1, n_multi, 1))
            flat.append(ops.reshape(shifted, (-1, n_multi * length)))
        if flat:
            indices = ops.concatenate(flat, axis=1) if len(flat) > 1 else flat[0]  # (batch, n_cat + n_multi * L)
            rows = self._gather(indices)  # (batch, n_cat + n_multi * L, d + 1)
            if n_cat:
                pieces.append(rows[:, :n_cat, :] if n_multi else rows)  # (batch, n_cat, d + 1)
            if n_multi:
                slots = ops.reshape(rows[:, n_cat:, :], (-1, n_multi, length, self.embedding_dim + 1))
                pieces.append(self.pooling(slots, multi))  # (batch, n_multi, d + 1)
        if self.num_numeric:
            numeric = ops.cast(inputs["numeric"], self.compute_dtype)  # (batch, n_numeric)
            # A gather, not a slice: its gradient stays row-sparse (a slice's is dense over the whole table).
            numeric_rows = self._gather(
                ops.arange(self._numeric_offset, self._numeric_offset + self.num_numeric, dtype="int32")
            )  # (n_numeric, d + 1)
            pieces.append(ops.expand_dims(numeric, -1) * ops.expand_dims(numeric_rows, 0))  # (batch, n_numeric, d + 1)
        fields = ops.concatenate(pieces, axis=1) if len(pieces) > 1 else pieces[0]  # (batch, fields, d + 1)
        # One split, not two slices: the gradient of a split is one concatenation, that of each slice a
        # zero-filled tensor of the whole `fields` shape.
        embeddings, first_order = ops.split(fields, [self.embedding_dim], axis=-1)  # (batch, fields, d), (..., 1)
        return embeddings, ops.squeeze(first_order, axis=-1)

    def _training_kernel(self, training):
        """The compiled kernel for this call (training steps on the CPU, TensorFlow, float32), else `None`."""
        if keras.backend.backend() != "tensorflow" or self.compute_dtype != "float32":
            return None
        import tensorflow as tf

        from deepfm_model.kernels import layer_ops

        if not isinstance(self.table.value, tf.Variable):  # a plain tensor in a `keras.StatelessScope`
            return None
        return layer_ops.training_kernel("field_embedding", training)

    def _gather(self, indices):
        """Rows of the table at `indices`, in the compute dtype; the gradient w.r.t. the table is row-sparse."""
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # Gather from the variable itself (a resource gather). Reading the whole table into a tensor
            # first, as `ops.take` does, keeps that read alive until the optimizer's row-wise (scatter)
            # update, which must then copy the whole table before writing: copy-on-write, every step.
            return ops.cast(tf.gather(self.table.value, indices), self.compute_dtype)
        return ops.cast(ops.take(ops.convert_to_tensor(self.table), indices, axis=0), self.compute_dtype)

    def compute_output_spec(self, inputs):
        batch = next(iter(inputs.values())).shape[0]
        return (
            keras.KerasTensor((batch, self.num_fields, self.embedding_dim), dtype=self.compute_dtype),
            keras.KerasTensor((batch, self.num_fields), dtype=self.compute_dtype),
        )

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "categorical_sizes": list(self.categorical_sizes),
            "multi_categorical_sizes": list(self.multi_categorical_sizes),
            "num_numeric": self.num_numeric,
            "embedding_dim": self.embedding_dim,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
            "l2": self.l2,
            "multi_value_combiner": self.multi_value_combiner,
            "multi_shared_with": list(self.multi_shared_with),
        }
