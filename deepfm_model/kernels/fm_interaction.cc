// The FM's second-order term and its gradient, one pass over the embeddings each: per example, the field sum
// and the sum of squares in one read (the TensorFlow-op path writes the squares and reads them back), and
// the gradient `upstream * (sum_j v_j - v_i)` from the field sum kept in registers.
#define EIGEN_USE_THREADS

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace deepfm {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

REGISTER_OP("DeepfmFmInteraction")
    .Input("embeddings: float")
    .Output("pairwise: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle embeddings;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &embeddings));
      c->set_output(0, c->MakeShape({c->Dim(embeddings, 0), 1}));
      return absl::OkStatus();
    })
    .Doc(R"doc(
0.5 * sum_d((sum_i v_id)^2 - sum_i v_id^2) of (batch, fields, dim) embeddings, as (batch, 1).
)doc");

REGISTER_OP("DeepfmFmInteractionGrad")
    .Input("embeddings: float")
    .Input("upstream: float")
    .Output("grad_embeddings: float")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    })
    .Doc(R"doc(
The gradient of DeepfmFmInteraction: upstream[b] * (sum_j v_bj - v_bi) for every field i of example b.
)doc");

namespace {

absl::Status CheckEmbeddings(const Tensor& embeddings) {
  if (embeddings.dims() != 3) {
    return absl::InvalidArgumentError("DeepfmFmInteraction: `embeddings` must be (batch, fields, dim), got " +
                                      embeddings.shape().DebugString());
  }
  return absl::OkStatus();
}

// The field sum of example `e` (a (fields, dim) block) into `sum`, and the sums of squares per channel into
// `squares` when given: per-channel accumulators, so the loops vectorise without reassociating float sums.
inline void FieldSums(const float* __restrict e, int64_t fields, int64_t dim, float* __restrict sum,
                      float* __restrict squares) {
  std::fill(sum, sum + dim, 0.0f);
  if (squares != nullptr) std::fill(squares, squares + dim, 0.0f);
  for (int64_t i = 0; i < fields; ++i, e += dim) {
    for (int64_t c = 0; c < dim; ++c) sum[c] += e[c];
    if (squares == nullptr) continue;
    for (int64_t c = 0; c < dim; ++c) squares[c] += e[c] * e[c];
  }
}

}  // namespace

class FmInteractionOp : public OpKernel {
 public:
  explicit FmInteractionOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& embeddings = context->input(0);
    OP_REQUIRES_OK(context, CheckEmbeddings(embeddings));
    const int64_t batch = embeddings.dim_size(0), fields = embeddings.dim_size(1), dim = embeddings.dim_size(2);
    Tensor* pairwise;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({batch, 1}), &pairwise));
    const float* v = embeddings.flat<float>().data();
    float* out = pairwise->flat<float>().data();
    auto compute = [&](int64_t begin, int64_t end) {
      std::vector<float> sum(dim), squares(dim);
      for (int64_t b = begin; b < end; ++b) {
        FieldSums(v + b * fields * dim, fields, dim, sum.data(), squares.data());
        float pairwise = 0.0f;
        for (int64_t c = 0; c < dim; ++c) pairwise += sum[c] * sum[c] - squares[c];
        out[b] = 0.5f * pairwise;
      }
    };
    auto* workers = context->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(workers->num_threads, workers->workers, batch, 3 * fields * dim, compute);
  }
};

class FmInteractionGradOp : public OpKernel {
 public:
  explicit FmInteractionGradOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& embeddings = context->input(0);
    const Tensor& upstream = context->input(1);
    OP_REQUIRES_OK(context, CheckEmbeddings(embeddings));
    const int64_t batch = embeddings.dim_size(0), fields = embeddings.dim_size(1), dim = embeddings.dim_size(2);
    OP_REQUIRES(context, upstream.NumElements() == batch,
                absl::InvalidArgumentError("DeepfmFmInteractionGrad: `upstream` must have one value per example (" +
                                           std::to_string(batch) + "), got " + upstream.shape().DebugString()));
    Tensor* grad;
    OP_REQUIRES_OK(context, context->allocate_output(0, embeddings.shape(), &grad));
    const float* v = embeddings.flat<float>().data();
    const float* u = upstream.flat<float>().data();
    float* g = grad->flat<float>().data();
    auto compute = [&](int64_t begin, int64_t end) {
      std::vector<float> sum(dim);
      for (int64_t b = begin; b < end; ++b) {
        const float* e = v + b * fields * dim;
        float* out = g + b * fields * dim;
        FieldSums(e, fields, dim, sum.data(), nullptr);
        const float scale = u[b];
        for (int64_t i = 0; i < fields; ++i) {
          for (int64_t c = 0; c < dim; ++c) out[i * dim + c] = scale * (sum[c] - e[i * dim + c]);
        }
      }
    };
    auto* workers = context->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(workers->num_threads, workers->workers, batch, 3 * fields * dim, compute);
  }
};

REGISTER_KERNEL_BUILDER(Name("DeepfmFmInteraction").Device(tensorflow::DEVICE_CPU), FmInteractionOp);
REGISTER_KERNEL_BUILDER(Name("DeepfmFmInteractionGrad").Device(tensorflow::DEVICE_CPU), FmInteractionGradOp);

}  // namespace deepfm
