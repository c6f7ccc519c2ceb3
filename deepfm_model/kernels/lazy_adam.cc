// Row-wise ("lazy") Adam on an embedding table in one kernel: duplicate rows summed, moments and weights of
// the touched rows updated in place. The same arithmetic as `SparseAdam`'s TensorFlow-op path, fused.
#define EIGEN_USE_THREADS

#include <algorithm>
#include <cstdint>
#include <limits>
#include <cmath>
#include <vector>

#include <sys/mman.h>

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
using tensorflow::Var;

REGISTER_OP("DeepfmLazyAdam")
    .Input("var: resource")
    .Input("m: resource")
    .Input("v: resource")
    .Input("alpha: float")
    .Input("beta_1: double")
    .Input("beta_2: double")
    .Input("epsilon: double")
    .Input("grad: float")
    .Input("indices: Tindices")
    .Attr("Tindices: {int32, int64}")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) { return absl::OkStatus(); })
    .Doc(R"doc(
Lazy Adam on the rows of a 2-D float table: for each distinct row r of `indices`, with g[r] the sum of the
`grad` rows that name it, m[r] = beta_1 m[r] + (1 - beta_1) g[r], v[r] = beta_2 v[r] + (1 - beta_2) g[r]^2,
var[r] -= alpha m[r] / (sqrt(v[r]) + epsilon). Other rows are left as they are.
)doc");

template <typename Index>
class LazyAdamOp : public OpKernel {
 public:
  explicit LazyAdamOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    Var* vars[3];
    for (int i = 0; i < 3; ++i) {
      OP_REQUIRES_OK(context, LookupResource(context, HandleFromInput(context, i), &vars[i]));
    }
    tensorflow::core::ScopedUnref unref_var(vars[0]), unref_m(vars[1]), unref_v(vars[2]);
    for (Var* var : vars) {
      // The dtype first: EnsureSparseVariableAccess<float> on another dtype aborts the process.
      OP_REQUIRES(context, var->tensor()->dtype() == tensorflow::DT_FLOAT,
                  absl::InvalidArgumentError("DeepfmLazyAdam: `var`, `m` and `v` must be float32, got " +
                                             var->tensor()->DebugString()));
      OP_REQUIRES_OK(context,
                     (tensorflow::EnsureSparseVariableAccess<Eigen::ThreadPoolDevice, float>(context, var)));
    }
    tsl::mutex_lock lock_var(*vars[0]->mu()), lock_m(*vars[1]->mu()), lock_v(*vars[2]->mu());
    Tensor* table = vars[0]->tensor();
    Tensor* m_table = vars[1]->tensor();
    Tensor* v_table = vars[2]->tensor();
    OP_REQUIRES(context, table->dtype() == tensorflow::DT_FLOAT && table->dims() == 2,
                absl::InvalidArgumentError("DeepfmLazyAdam: `var` must be a 2-D float32 variable, got " +
                                           table->DebugString()));
    OP_REQUIRES(context, m_table->shape() == table->shape() && v_table->shape() == table->shape() &&
                             m_table->dtype() == tensorflow::DT_FLOAT && v_table->dtype() == tensorflow::DT_FLOAT,
                absl::InvalidArgumentError("DeepfmLazyAdam: `m` and `v` must be float32 of `var`'s shape " +
                                           table->shape().DebugString()));
    const Tensor& grad = context->input(7);
    const Tensor& indices = context->input(8);
    const int64_t rows = table->dim_size(0), width = table->dim_size(1);
    OP_REQUIRES(context, indices.dims() == 1 && grad.dims() == 2 && grad.dim_size(0) == indices.dim_size(0) &&
                             grad.dim_size(1) == width,
                absl::InvalidArgumentError("DeepfmLazyAdam: `grad` must be (len(indices), " +
                                           std::to_string(width) + "), got " + grad.shape().DebugString() +
                                           " and indices " + indices.shape().DebugString()));
    const float alpha = context->input(3).scalar<float>()();
    // The betas come in double, so that `1 - beta` is rounded to float32 once, as Keras' Python floats are.
    const double beta_1_exact = context->input(4).scalar<double>()();
    const double beta_2_exact = context->input(5).scalar<double>()();
    const float beta_1 = static_cast<float>(beta_1_exact), one_minus_beta_1 = static_cast<float>(1.0 - beta_1_exact);
    const float beta_2 = static_cast<float>(beta_2_exact), one_minus_beta_2 = static_cast<float>(1.0 - beta_2_exact);
    const float epsilon = static_cast<float>(context->input(6).scalar<double>()());
    const int64_t n = indices.dim_size(0);
    OP_REQUIRES(context, n < std::numeric_limits<int32_t>::max(),
                absl::InvalidArgumentError("DeepfmLazyAdam: more than 2^31 - 1 indices"));
    if (n == 0) return;
    OP_REQUIRES(context, rows > 0, absl::InvalidArgumentError("DeepfmLazyAdam: indices into a table with no rows"));
    const Index* index = indices.flat<Index>().data();
    const float* g = grad.flat<float>().data();
    float* w = table->flat<float>().data();
    float* m = m_table->flat<float>().data();
    float* v = v_table->flat<float>().data();

    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = static_cast<int64_t>(index[i]);
      OP_REQUIRES(context, r >= 0 && r < rows,
                  absl::InvalidArgumentError("DeepfmLazyAdam: indices[" + std::to_string(i) + "] = " +
                                             std::to_string(r) + " is not in [0, " + std::to_string(rows) + ")"));
    }

    tsl::mutex_lock lock_slots(slots_mu_);
    for (int i = 0; i < 3; ++i) {
      const auto data = vars[i]->tensor()->tensor_data();
      AdviseHugePages(data.data(), data.size(), &advised_[i]);
    }
    if (static_cast<int64_t>(slot_.size()) != rows) slot_.assign(rows, -1);
    AdviseHugePages(slot_.data(), slot_.size() * sizeof(int32_t), &advised_[3]);
    auto* workers = context->device()->tensorflow_cpu_worker_threads();
    // The table's rows are split in `parts` consecutive ranges, each updated by one task: it reads every
    // index but keeps only its own rows, so the tasks share nothing but the read-only inputs.
    const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(workers->num_threads, n / 1024));
    parts_.resize(parts);
    auto update_part = [&](int64_t begin_part, int64_t end_part) {
      for (int64_t p = begin_part; p < end_part; ++p) {
        UpdateRows(p * rows / parts, (p + 1) * rows / parts, n, index, g, width, alpha, beta_1, one_minus_beta_1,
                   beta_2, one_minus_beta_2, epsilon, w, m, v, &parts_[p]);
      }
    };
    tensorflow::Shard(workers->num_threads, workers->workers, parts, /*cost_per_unit=*/1 << 30, update_part);
  }

 private:
  static constexpr int64_t kLookAhead = 8;  // entries or rows ahead to prefetch
  static constexpr uintptr_t kHugePage = uintptr_t{2} << 20;

  // Backs the table's buffer with 2 MiB pages, once per buffer. Lookups and updates land on rows all over
  // tables of hundreds of MB, and with 4 KiB pages nearly every one costs a TLB miss (a page walk, doubly
  // dear in a virtual machine). MADV_COLLAPSE (Linux 6.1) moves the pages already there; where the kernel
  // lacks it or has no huge page free, the table stays as it was: advice, so failures are ignored.
  static void AdviseHugePages(const void* data, size_t size, const void** advised) {
    if (data == *advised) return;
    *advised = data;
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHugePage - 1) & ~(kHugePage - 1);
    const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + size) & ~(kHugePage - 1);
#ifdef __linux__
    constexpr int kCollapse = 25;  // MADV_COLLAPSE, absent from older headers
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, kCollapse);
#endif
  }

  struct Part {
    std::vector<int64_t> unique;  // distinct rows of the part in the call, in order of first appearance
    std::vector<float> sum;  // (distinct rows, width): their summed gradients
  };

  // Lazy Adam on the rows in [first, last) that `index` names. One pass over the entries, in order, finds
  // the distinct rows and sums each one's gradient (in entry order, so the sums are the same however the
  // rows are split); a second pass over the distinct rows updates weights and moments in place.
  void UpdateRows(int64_t first, int64_t last, int64_t n, const Index* index, const float* g, int64_t width,
                  float alpha, float beta_1, float one_minus_beta_1, float beta_2, float one_minus_beta_2,
                  float epsilon, float* w, float* m, float* v, Part* part) {
    part->unique.resize(n);
    if (static_cast<int64_t>(part->sum.size()) < n * width) part->sum.resize(n * width);
    int64_t count = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (i + kLookAhead < n) {
        const int64_t ahead = static_cast<int64_t>(index[i + kLookAhead]);
        if (ahead >= first && ahead < last) __builtin_prefetch(&slot_[ahead]);
      }
      const int64_t r = static_cast<int64_t>(index[i]);
      if (r < first || r >= last) continue;
      const float* gi = g + i * width;
      int32_t s = slot_[r];
      if (s < 0) {
        s = slot_[r] = static_cast<int32_t>(count);
        part->unique[count++] = r;
        std::copy(gi, gi + width, &part->sum[s * width]);
      } else {
        float* total = &part->sum[s * width];
        for (int64_t c = 0; c < width; ++c) total[c] += gi[c];
      }
    }
    for (int64_t s = 0; s < count; ++s) {
      if (s + kLookAhead < count) {
        const int64_t ahead = part->unique[s + kLookAhead] * width;
        for (float* table : {w, m, v}) {
          __builtin_prefetch(table + ahead, 1);
          __builtin_prefetch(table + ahead + width - 1, 1);
        }
      }
      const int64_t r = part->unique[s];
      const float* total = &part->sum[s * width];
      float* wr = w + r * width;
      float* mr = m + r * width;
      float* vr = v + r * width;
      for (int64_t c = 0; c < width; ++c) {
        const float m_new = beta_1 * mr[c] + one_minus_beta_1 * total[c];
        const float v_new = beta_2 * vr[c] + one_minus_beta_2 * (total[c] * total[c]);
        mr[c] = m_new;
        vr[c] = v_new;
        wr[c] = wr[c] - alpha * m_new / (std::sqrt(v_new) + epsilon);
      }
      slot_[r] = -1;
    }
  }

  tsl::mutex slots_mu_;  // guards the scratch and the advised buffers below (one call at a time per kernel)
  std::vector<int32_t> slot_;  // per table row: its position in its part's `unique` during a call, else -1
  std::vector<Part> parts_;
  const void* advised_[4] = {};  // the buffers of var, m, v and `slot_` last advised
};

REGISTER_KERNEL_BUILDER(
    Name("DeepfmLazyAdam").Device(tensorflow::DEVICE_CPU).TypeConstraint<int32_t>("Tindices"),
    LazyAdamOp<int32_t>);
REGISTER_KERNEL_BUILDER(
    Name("DeepfmLazyAdam").Device(tensorflow::DEVICE_CPU).TypeConstraint<int64_t>("Tindices"),
    LazyAdamOp<int64_t>);

}  // namespace deepfm
