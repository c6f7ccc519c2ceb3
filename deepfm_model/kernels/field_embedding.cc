// `FieldEmbedding` in one pass per direction: the forward op reads the table's rows for every field (lookups,
// masked mean pooling, numeric scaling) and writes the embeddings and first-order weights; the gradient op
// writes the table's row-sparse gradient, one row per lookup, as `tf.gather`'s gradient would. The same
// arithmetic as the layer's TensorFlow-op path, without its intermediate tensors (gathered rows, the
// concatenation of the fields, the split into vectors and weights, and their gradients).
#define EIGEN_USE_THREADS

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/kernels/training_op_helpers.h"
#include "tensorflow/core/util/work_sharder.h"

namespace deepfm {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::Var;
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

REGISTER_OP("DeepfmFieldEmbedding")
    .Input("table: resource")
    .Input("categorical: int32")
    .Input("multi_categorical: int32")
    .Input("numeric: float")
    .Attr("categorical_offsets: list(int) >= 0")
    .Attr("multi_offsets: list(int) >= 0")
    .Attr("numeric_offset: int")
    .Attr("embedding_dim: int >= 1")
    .Attr("combiner: {'mean', 'sum'} = 'mean'")
    .Output("embeddings: float")
    .Output("first_order: float")
    .Output("numeric_rows: float")
    .SetShapeFn([](InferenceContext* c) {
      std::vector<int64_t> categorical_offsets, multi_offsets;
      int64_t dim;
      TF_RETURN_IF_ERROR(c->GetAttr("categorical_offsets", &categorical_offsets));
      TF_RETURN_IF_ERROR(c->GetAttr("multi_offsets", &multi_offsets));
      TF_RETURN_IF_ERROR(c->GetAttr("embedding_dim", &dim));
      ShapeHandle categorical, multi, numeric;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &categorical));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 3, &multi));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 2, &numeric));
      DimensionHandle batch = c->Dim(categorical, 0), num_numeric = c->Dim(numeric, 1);
      TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(multi, 0), &batch));
      TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(numeric, 0), &batch));
      DimensionHandle fields;
      TF_RETURN_IF_ERROR(c->Add(num_numeric, static_cast<int64_t>(categorical_offsets.size() + multi_offsets.size()),
                                &fields));
      c->set_output(0, c->MakeShape({batch, fields, dim}));
      c->set_output(1, c->MakeShape({batch, fields}));
      c->set_output(2, c->MakeShape({num_numeric, dim + 1}));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Field embeddings and first-order weights from one table of rows [v (embedding_dim), w (1)]: categorical field
i takes row categorical_offsets[i] + k; multi-valued field j the mean (or, with combiner 'sum', the sum) of
the rows multi_offsets[j] + k over its slots with k != 0 (no value: zeros); numeric field j its value times row numeric_offset + j (also returned,
as `numeric_rows`, for the gradient). Fields in that order.
)doc");

REGISTER_OP("DeepfmFieldEmbeddingGrad")
    .Input("grad_embeddings: float")
    .Input("grad_first_order: float")
    .Input("categorical: int32")
    .Input("multi_categorical: int32")
    .Input("numeric: float")
    .Input("numeric_rows: float")
    .Attr("categorical_offsets: list(int) >= 0")
    .Attr("multi_offsets: list(int) >= 0")
    .Attr("numeric_offset: int")
    .Attr("combiner: {'mean', 'sum'} = 'mean'")
    .Output("values: float")
    .Output("indices: int32")
    .Output("grad_numeric: float")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->MakeShape({c->UnknownDim(), c->Dim(c->input(5), 1)}));
      c->set_output(1, c->Vector(c->UnknownDim()));
      c->set_output(2, c->input(4));
      return absl::OkStatus();
    })
    .Doc(R"doc(
The gradient of DeepfmFieldEmbedding: the table's as row-sparse (values, indices), one row per categorical
lookup, per multi-valued slot (padding slots get zeros) and per numeric field (summed over the batch), in
that order; and the gradient with respect to the numeric values.
)doc");

namespace {

// Rows of a (batch, ...) loop per shard: enough work per shard that the split pays for itself.
constexpr int64_t kCostPerValue = 4;
// Examples ahead whose categorical rows are prefetched: the rows lie all over the table, so each read
// would otherwise wait for memory on its own.
constexpr int64_t kLookAhead = 2;

struct Layout {
  std::vector<int64_t> categorical_offsets, multi_offsets;
  int64_t numeric_offset = 0;
  bool mean = true;  // multi-valued fields: mean (else sum) of their slots' rows
  int64_t batch = 0, num_categorical = 0, num_multi = 0, length = 0, num_numeric = 0;
  int64_t fields() const { return num_categorical + num_multi + num_numeric; }
};

void ReadAttrs(OpKernelConstruction* context, Layout* layout) {
  OP_REQUIRES_OK(context, context->GetAttr("categorical_offsets", &layout->categorical_offsets));
  OP_REQUIRES_OK(context, context->GetAttr("multi_offsets", &layout->multi_offsets));
  OP_REQUIRES_OK(context, context->GetAttr("numeric_offset", &layout->numeric_offset));
  std::string combiner;
  OP_REQUIRES_OK(context, context->GetAttr("combiner", &combiner));
  layout->mean = combiner == "mean";
}

// Checks the index inputs against the offsets and each other; fills the layout's sizes.
absl::Status CheckInputs(const Tensor& categorical, const Tensor& multi, const Tensor& numeric, Layout* layout) {
  if (categorical.dims() != 2 || multi.dims() != 3 || numeric.dims() != 2) {
    return absl::InvalidArgumentError("DeepfmFieldEmbedding: `categorical` must be 2-D, `multi_categorical` 3-D "
                                      "and `numeric` 2-D, got " + categorical.shape().DebugString() + ", " +
                                      multi.shape().DebugString() + " and " + numeric.shape().DebugString());
  }
  layout->batch = categorical.dim_size(0);
  layout->num_categorical = categorical.dim_size(1);
  layout->num_multi = multi.dim_size(1);
  layout->length = multi.dim_size(2);
  layout->num_numeric = numeric.dim_size(1);
  if (multi.dim_size(0) != layout->batch || numeric.dim_size(0) != layout->batch ||
      layout->num_categorical != static_cast<int64_t>(layout->categorical_offsets.size()) ||
      layout->num_multi != static_cast<int64_t>(layout->multi_offsets.size())) {
    return absl::InvalidArgumentError(
        "DeepfmFieldEmbedding: inputs " + categorical.shape().DebugString() + ", " + multi.shape().DebugString() +
        ", " + numeric.shape().DebugString() + " do not match " + std::to_string(layout->categorical_offsets.size()) +
        " categorical and " + std::to_string(layout->multi_offsets.size()) + " multi-valued offsets");
  }
  return absl::OkStatus();
}

// Every row the lookups name must lie in the table; the error names the first one that does not.
absl::Status CheckRows(const Layout& layout, const int32_t* categorical, const int32_t* multi, int64_t rows) {
  for (int64_t e = 0; e < layout.batch * layout.num_categorical; ++e) {
    const int64_t r = layout.categorical_offsets[e % layout.num_categorical] + categorical[e];
    if (r < 0 || r >= rows) {
      return absl::InvalidArgumentError("DeepfmFieldEmbedding: categorical[" +
                                        std::to_string(e / layout.num_categorical) + ", " +
                                        std::to_string(e % layout.num_categorical) + "] = " +
                                        std::to_string(categorical[e]) + " names row " + std::to_string(r) +
                                        ", not in [0, " + std::to_string(rows) + ")");
    }
  }
  const int64_t slots = layout.num_multi * layout.length;
  for (int64_t e = 0; e < layout.batch * slots; ++e) {
    const int64_t r = layout.multi_offsets[(e % slots) / layout.length] + multi[e];
    if (r < 0 || r >= rows) {
      return absl::InvalidArgumentError("DeepfmFieldEmbedding: multi_categorical[" + std::to_string(e / slots) +
                                        ", " + std::to_string((e % slots) / layout.length) + ", " +
                                        std::to_string(e % layout.length) + "] = " + std::to_string(multi[e]) +
                                        " names row " + std::to_string(r) + ", not in [0, " +
                                        std::to_string(rows) + ")");
    }
  }
  if (layout.num_numeric > 0 && (layout.numeric_offset < 0 || layout.numeric_offset + layout.num_numeric > rows)) {
    return absl::InvalidArgumentError("DeepfmFieldEmbedding: numeric rows [" + std::to_string(layout.numeric_offset) +
                                      ", " + std::to_string(layout.numeric_offset + layout.num_numeric) +
                                      ") not in [0, " + std::to_string(rows) + ")");
  }
  return absl::OkStatus();
}

// What a multi-valued field's summed rows are divided by: its count of non-padding slots (at least one) for
// mean pooling, one for sum pooling.
float PoolingDivisor(const Layout& layout, const int32_t* slots) {
  if (!layout.mean) return 1.0f;
  int64_t count = 0;
  for (int64_t l = 0; l < layout.length; ++l) count += slots[l] != 0;
  return static_cast<float>(std::max<int64_t>(count, 1));
}

}  // namespace

class FieldEmbeddingOp : public OpKernel {
 public:
  explicit FieldEmbeddingOp(OpKernelConstruction* context) : OpKernel(context) {
    ReadAttrs(context, &attrs_);
    OP_REQUIRES_OK(context, context->GetAttr("embedding_dim", &dim_));
  }

  void Compute(OpKernelContext* context) override {
    Layout layout = attrs_;
    const Tensor& categorical = context->input(1);
    const Tensor& multi = context->input(2);
    const Tensor& numeric = context->input(3);
    OP_REQUIRES_OK(context, CheckInputs(categorical, multi, numeric, &layout));
    Var* var;
    OP_REQUIRES_OK(context, LookupResource(context, HandleFromInput(context, 0), &var));
    tensorflow::core::ScopedUnref unref(var);
    // The dtype first: EnsureSparseVariableAccess<float> on another dtype aborts the process.
    OP_REQUIRES(context, var->tensor()->dtype() == tensorflow::DT_FLOAT,
                absl::InvalidArgumentError("DeepfmFieldEmbedding: `table` must be float32, got " +
                                           var->tensor()->DebugString()));
    OP_REQUIRES_OK(context, (tensorflow::EnsureSparseVariableAccess<Eigen::ThreadPoolDevice, float>(context, var)));
    // Held for the whole op, as `ResourceGather` does: a reference to the tensor instead would make the
    // optimizer's in-place update copy the whole table.
    tsl::tf_shared_lock lock(*var->mu());
    const Tensor& table = *var->tensor();
    OP_REQUIRES(context, table.dtype() == tensorflow::DT_FLOAT && table.dims() == 2 && table.dim_size(1) == dim_ + 1,
                absl::InvalidArgumentError("DeepfmFieldEmbedding: `table` must be a float32 (rows, " +
                                           std::to_string(dim_ + 1) + ") variable, got " + table.DebugString()));
    OP_REQUIRES(context, table.dim_size(0) <= std::numeric_limits<int32_t>::max(),
                absl::InvalidArgumentError("DeepfmFieldEmbedding: more than 2^31 - 1 table rows (int32 indices)"));
    const int32_t* cat = categorical.flat<int32_t>().data();
    const int32_t* slots = multi.flat<int32_t>().data();
    OP_REQUIRES_OK(context, CheckRows(layout, cat, slots, table.dim_size(0)));

    const int64_t fields = layout.fields(), width = dim_ + 1;
    Tensor *embeddings, *first_order, *numeric_rows;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({layout.batch, fields, dim_}), &embeddings));
    OP_REQUIRES_OK(context, context->allocate_output(1, TensorShape({layout.batch, fields}), &first_order));
    OP_REQUIRES_OK(context, context->allocate_output(2, TensorShape({layout.num_numeric, width}), &numeric_rows));
    const float* t = table.flat<float>().data();
    const float* x = numeric.flat<float>().data();
    float* emb = embeddings->flat<float>().data();
    float* first = first_order->flat<float>().data();
    const int64_t dim = dim_;
    std::copy(t + layout.numeric_offset * width, t + (layout.numeric_offset + layout.num_numeric) * width,
              numeric_rows->flat<float>().data());

    auto fill = [&](int64_t begin, int64_t end) {
      std::vector<float> total(width);
      for (int64_t b = begin; b < end; ++b) {
        if (b + kLookAhead < end) {  // the rows of a later example, so that many reads are in flight at once
          const int32_t* ahead = cat + (b + kLookAhead) * layout.num_categorical;
          for (int64_t i = 0; i < layout.num_categorical; ++i) {
            const float* row = t + (layout.categorical_offsets[i] + ahead[i]) * width;
            __builtin_prefetch(row);
            __builtin_prefetch(row + width - 1);
          }
        }
        float* e = emb + b * fields * dim;
        float* w = first + b * fields;
        for (int64_t i = 0; i < layout.num_categorical; ++i, e += dim, ++w) {
          const float* row = t + (layout.categorical_offsets[i] + cat[b * layout.num_categorical + i]) * width;
          std::copy(row, row + dim, e);
          *w = row[dim];
        }
        for (int64_t j = 0; j < layout.num_multi; ++j, e += dim, ++w) {
          const int32_t* k = slots + (b * layout.num_multi + j) * layout.length;
          std::fill(total.begin(), total.end(), 0.0f);
          for (int64_t l = 0; l < layout.length; ++l) {
            if (k[l] == 0) continue;  // padding
            const float* row = t + (layout.multi_offsets[j] + k[l]) * width;
            for (int64_t c = 0; c < width; ++c) total[c] += row[c];
          }
          const float divisor = PoolingDivisor(layout, k);
          for (int64_t c = 0; c < dim; ++c) e[c] = total[c] / divisor;
          *w = total[dim] / divisor;
        }
        for (int64_t j = 0; j < layout.num_numeric; ++j, e += dim, ++w) {
          const float value = x[b * layout.num_numeric + j];
          const float* row = t + (layout.numeric_offset + j) * width;
          for (int64_t c = 0; c < dim; ++c) e[c] = value * row[c];
          *w = value * row[dim];
        }
      }
    };
    auto* workers = context->device()->tensorflow_cpu_worker_threads();
    const int64_t cost = kCostPerValue * (layout.num_categorical + layout.num_multi * layout.length +
                                          layout.num_numeric) * width;
    tensorflow::Shard(workers->num_threads, workers->workers, layout.batch, cost, fill);
  }

 private:
  Layout attrs_;
  int64_t dim_;
};

class FieldEmbeddingGradOp : public OpKernel {
 public:
  explicit FieldEmbeddingGradOp(OpKernelConstruction* context) : OpKernel(context) { ReadAttrs(context, &attrs_); }

  void Compute(OpKernelContext* context) override {
    Layout layout = attrs_;
    const Tensor& grad_embeddings = context->input(0);
    const Tensor& grad_first_order = context->input(1);
    const Tensor& categorical = context->input(2);
    const Tensor& multi = context->input(3);
    const Tensor& numeric = context->input(4);
    const Tensor& numeric_rows = context->input(5);
    OP_REQUIRES_OK(context, CheckInputs(categorical, multi, numeric, &layout));
    const int64_t fields = layout.fields();
    OP_REQUIRES(context, numeric_rows.dims() == 2 && numeric_rows.dim_size(0) == layout.num_numeric &&
                             numeric_rows.dim_size(1) >= 2,
                absl::InvalidArgumentError("DeepfmFieldEmbeddingGrad: `numeric_rows` must be (" +
                                           std::to_string(layout.num_numeric) + ", dim + 1), got " +
                                           numeric_rows.shape().DebugString()));
    const int64_t width = numeric_rows.dim_size(1), dim = width - 1;
    OP_REQUIRES(context, grad_embeddings.shape() == TensorShape({layout.batch, fields, dim}) &&
                             grad_first_order.shape() == TensorShape({layout.batch, fields}),
                absl::InvalidArgumentError("DeepfmFieldEmbeddingGrad: gradients " +
                                           grad_embeddings.shape().DebugString() + " and " +
                                           grad_first_order.shape().DebugString() + " do not match (" +
                                           std::to_string(layout.batch) + ", " + std::to_string(fields) + ", " +
                                           std::to_string(dim) + ")"));
    const int64_t lookups = layout.batch * (layout.num_categorical + layout.num_multi * layout.length);
    const int64_t entries = lookups + layout.num_numeric;
    Tensor *values, *indices, *grad_numeric;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({entries, width}), &values));
    OP_REQUIRES_OK(context, context->allocate_output(1, TensorShape({entries}), &indices));
    OP_REQUIRES_OK(context, context->allocate_output(2, numeric.shape(), &grad_numeric));
    const float* ge = grad_embeddings.flat<float>().data();
    const float* gw = grad_first_order.flat<float>().data();
    const int32_t* cat = categorical.flat<int32_t>().data();
    const int32_t* slots = multi.flat<int32_t>().data();
    const float* x = numeric.flat<float>().data();
    const float* numeric_table = numeric_rows.flat<float>().data();
    float* out = values->flat<float>().data();
    int32_t* out_index = indices->flat<int32_t>().data();
    float* gx = grad_numeric->flat<float>().data();
    const int64_t nc = layout.num_categorical, nm = layout.num_multi, length = layout.length;
    const int64_t nn = layout.num_numeric;

    auto rows = [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const float* e = ge + b * fields * dim;
        const float* w = gw + b * fields;
        for (int64_t i = 0; i < nc; ++i, e += dim, ++w) {
          float* o = out + (b * nc + i) * width;
          std::copy(e, e + dim, o);
          o[dim] = *w;
          out_index[b * nc + i] = static_cast<int32_t>(layout.categorical_offsets[i] + cat[b * nc + i]);
        }
        for (int64_t j = 0; j < nm; ++j, e += dim, ++w) {
          const int32_t* k = slots + (b * nm + j) * length;
          const float divisor = PoolingDivisor(layout, k);
          for (int64_t l = 0; l < length; ++l) {
            const int64_t entry = layout.batch * nc + (b * nm + j) * length + l;
            float* o = out + entry * width;
            out_index[entry] = static_cast<int32_t>(layout.multi_offsets[j] + k[l]);
            if (k[l] == 0) {
              std::fill(o, o + width, 0.0f);
              continue;
            }
            for (int64_t c = 0; c < dim; ++c) o[c] = e[c] / divisor;
            o[dim] = *w / divisor;
          }
        }
        for (int64_t j = 0; j < nn; ++j, e += dim, ++w) {
          const float* row = numeric_table + j * width;
          float sum = *w * row[dim];
          for (int64_t c = 0; c < dim; ++c) sum += e[c] * row[c];
          gx[b * nn + j] = sum;
        }
      }
    };
    auto* workers = context->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(workers->num_threads, workers->workers, layout.batch,
                      kCostPerValue * (nc + nm * length + nn) * width, rows);

    // The numeric rows' gradients, sum_b x[b, j] * g[b, j], over fixed blocks of the batch and then over the
    // blocks in order: the same sums however the blocks are scheduled.
    if (nn == 0) return;
    const int64_t blocks = std::min<int64_t>(kBlocks, std::max<int64_t>(layout.batch, 1));
    std::vector<float> partial(blocks * nn * width, 0.0f);
    auto sum_blocks = [&](int64_t begin, int64_t end) {
      for (int64_t block = begin; block < end; ++block) {
        float* p = partial.data() + block * nn * width;
        for (int64_t b = block * layout.batch / blocks; b < (block + 1) * layout.batch / blocks; ++b) {
          for (int64_t j = 0; j < nn; ++j) {
            const float value = x[b * nn + j];
            const float* e = ge + (b * fields + nc + nm + j) * dim;
            float* pj = p + j * width;
            for (int64_t c = 0; c < dim; ++c) pj[c] += value * e[c];
            pj[dim] += value * gw[b * fields + nc + nm + j];
          }
        }
      }
    };
    tensorflow::Shard(workers->num_threads, workers->workers, blocks,
                      kCostPerValue * nn * width * layout.batch / blocks, sum_blocks);
    float* numeric_out = out + lookups * width;
    std::fill(numeric_out, numeric_out + nn * width, 0.0f);
    for (int64_t block = 0; block < blocks; ++block) {
      for (int64_t c = 0; c < nn * width; ++c) numeric_out[c] += partial[block * nn * width + c];
    }
    for (int64_t j = 0; j < nn; ++j) out_index[lookups + j] = static_cast<int32_t>(layout.numeric_offset + j);
  }

 private:
  static constexpr int64_t kBlocks = 16;
  Layout attrs_;
};

REGISTER_KERNEL_BUILDER(Name("DeepfmFieldEmbedding").Device(tensorflow::DEVICE_CPU), FieldEmbeddingOp);
REGISTER_KERNEL_BUILDER(Name("DeepfmFieldEmbeddingGrad").Device(tensorflow::DEVICE_CPU), FieldEmbeddingGradOp);

}  // namespace deepfm
