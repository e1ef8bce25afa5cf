// The native kernels behind shardface's cpu-native backend: plain C++ over raw
// float32 buffers (NHWC, row-major), no N-API types. addon.cc binds them to JS.
#pragma once
#include <cstddef>
#include <cstdint>

namespace sf {

// ---- threads (threads.cc) ----------------------------------------------------
/** Sets OpenBLAS's and OpenMP's thread counts together. */
void setThreads(int n);
int threads();
/** A grow-only scratch buffer per slot, reused between calls (no page faults per call). */
float* scratch(int slot, size_t floats);
/**
 * Maps in the pages of an output buffer about to be written (huge pages where the
 * buffer spans an aligned 2 MB, one madvise instead of a fault per 4 KB page): fresh
 * outputs from JavaScript are newly mmapped memory, and first-touch faults cost as
 * much as a small kernel. A no-op for small buffers and where the kernel lacks it.
 */
void prefaultOutput(float* p, size_t floats);
/**
 * Keeps freed memory in the process (on) or lets glibc hand it back (off, its
 * defaults). A training step allocates the same tensor sizes every step, tens of
 * MB each; by default glibc mmaps each such block fresh and unmaps it on free, so
 * every step page-faults its whole working set in again, which on a virtual
 * machine costs more than the kernels (docs/architecture.md#compute-backends).
 * On: no block is mmapped and the heap is never trimmed, so a freed block serves
 * the next allocation of its size without a fault. Returns false where it is not
 * glibc or mallopt refused.
 */
bool reuseFreedMemory(bool on);

// ---- GEMM (gemm.cc) -------------------------------------------------------------
/**
 * C[b] = op(A[b % batchA]) · op(B[b % batchB]) for b < batch; A is [M,K] (or [K,M] when
 * transA), B is [K,N] (or [N,K] when transB), C is [batch, M, N].
 */
void batchMatMul(const float* a, const float* b, float* c, int64_t batch, int64_t batchA, int64_t batchB,
                 int64_t m, int64_t n, int64_t k, bool transA, bool transB);

enum Activation { kLinear = 0, kRelu = 1, kRelu6 = 2, kPrelu = 3, kLeakyRelu = 4, kElu = 5, kSigmoid = 6 };
/** How a bias or PReLU weight tensor lines up with a [rows, cols] output. */
enum Broadcast { kNone = 0, kScalar = 1, kPerColumn = 2, kFull = 3 };
/** y = act(y + bias) in place, one pass. */
void epilogue(float* y, int64_t rows, int64_t cols, const float* bias, int biasMode, int activation, float alpha,
              const float* preluWeights, int preluMode);

// ---- convolutions (conv.cc, depthwise.cc) ----------------------------------------------
struct ConvShape {
  int64_t n, h, w, c;     // input
  int64_t kh, kw;         // filter window
  int64_t oh, ow, cout;   // output
  int64_t sh, sw;         // strides
  int64_t pt, pl;         // padding before (top, left)
  int64_t groups;         // 1 = ordinary conv; for depthwise unused (cout = c * multiplier)
};

/** Grouped conv, filter [kh, kw, c/groups, cout]; groups = 1 is tf.conv2d. */
void conv2d(const float* x, const float* w, float* y, const ConvShape& s);
void conv2dBackpropInput(const float* dy, const float* w, float* dx, const ConvShape& s);
void conv2dBackpropFilter(const float* x, const float* dy, float* dw, const ConvShape& s);

/** Depthwise conv, filter [kh, kw, c, multiplier], cout = c * multiplier. */
void depthwise(const float* x, const float* w, float* y, const ConvShape& s);
void depthwiseBackpropInput(const float* dy, const float* w, float* dx, const ConvShape& s);
void depthwiseBackpropFilter(const float* x, const float* dy, float* dw, const ConvShape& s);

/** Most input and output channels per group the direct grouped kernels below take. */
constexpr int64_t kGroupedSmallMax = 4;
/** Whether the direct grouped kernels take this shape (groups > 1, few channels per group). */
bool groupedSmallFits(const ConvShape& s);
/** Grouped conv with few channels per group as direct loops (depthwise.cc), filter [kh, kw, c/groups, cout]. */
void groupedSmall(const float* x, const float* w, float* y, const ConvShape& s);
void groupedSmallBackpropInput(const float* dy, const float* w, float* dx, const ConvShape& s);
void groupedSmallBackpropFilter(const float* x, const float* dy, float* dw, const ConvShape& s);

// ---- element-wise and reductions (elementwise.cc) ---------------------------------------
enum BinaryOp { kAdd = 0, kSub = 1, kMul = 2, kDiv = 3, kPreluOp = 4, kMax = 5, kMin = 6, kSquaredDiff = 7 };
/**
 * out[p,q,r] = a op b over a [P,Q,R] view of the output. side 0: both full;
 * side 1: b is [P,1,R] (broadcast over q); side 2: a is [P,1,R].
 */
void binary(int op, const float* a, const float* b, float* out, int64_t p, int64_t q, int64_t r, int side);
void relu(const float* x, float* y, int64_t n);
/** out[p,r] = scale * sum_q x[p,q,r], accumulated in double. */
void reduceSum(const float* x, float* out, int64_t p, int64_t q, int64_t r, double scale);

// ---- the sharded classifier (classifier.cc) ---------------------------------------------
/** How the target logit's forward and gradient are taken (margin.ts's MarginVariant). */
enum MarginVariantCode { kStraightThrough = 0, kExact = 1, kLegacy = 2, kLegacyEasy = 3 };
struct Margin {
  double s, m1, m2, m3;
  int variant;
};
/** out[j] = ‖x_j‖₂ for each of `rows` rows of length d (squares rounded to float, summed in double). */
void rowNorms(const float* x, int64_t rows, int64_t d, float* out);
/**
 * softmax-shard.ts's shardForward: per row of the N embeddings against the K raw weight
 * rows (wNorm = their norms, or null to compute them): local max, Σexp(z − max), and the
 * margined target logit (0 where labels[i] = −1). Never more than chunk×K logits at once.
 */
void shardForward(const float* emb, const float* w, const float* wNorm, const int32_t* labels, int64_t n, int64_t k,
                  int64_t d, const Margin& margin, int64_t chunk, float* rowMax, float* sumExp, float* target);
/** softmax-shard.ts's shardBackward: gradEmb (N×D, this shard's partial) and gradW (K×D). */
void shardBackward(const float* emb, const float* w, const float* wNorm, const int32_t* labels, const float* logSumExp,
                   int64_t n, int64_t k, int64_t d, const Margin& margin, double rowsTotal, int64_t chunk,
                   float* gradEmb, float* gradW);
/** In place, rows index[j] (j < rows; index null = rows 0..rows−1): v ← μv + (g + wd·w), w ← w − lr·v. */
void rowSgdUpdate(float* w, float* v, const float* g, const int32_t* index, int64_t rows, int64_t d, float lr, float mu,
                  float wd);
/** Scalars of one AdamW step, each already rounded to float32 as the composite's scalar tensors are. */
struct AdamWConsts {
  float decay, beta1, oneMinusBeta1, beta2, oneMinusBeta2, sqrtBc2, eps, stepSize;
};
/** In place: w ← w·decay; m ← β1m + (1−β1)g; v ← β2v + (1−β2)g²; w ← w − (m/(√v/√bc2 + eps))·stepSize. */
void rowAdamWUpdate(float* w, float* m, float* v, const float* g, const int32_t* index, int64_t rows, int64_t d,
                    const AdamWConsts& c);
/** out[j] = x[index[j]] (rows of length d). */
void gatherRows(const float* x, const int32_t* index, int64_t rows, int64_t d, float* out);

}  // namespace sf
