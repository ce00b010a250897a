// mics-bench-model: forward+backward of a GPT-2-small-like stack on one rank, on the CPU
// backend, against the limit measured in the same run: the backend's own sgemm rate on
// the model's GEMM shapes with the same thread count.
//
//   mics-bench-model [--threads 2] [--layers 4] [--hidden 768] [--heads 12] [--seq 256]
//                    [--batch 4] [--vocab 50257] [--iters 3] [--warmup 1] [--sgemm-only]
//
// --sgemm-only prints the limit alone (the GEMM shapes at batch x seq tokens, no model).
//
// Each timed forward+backward is followed by a timed optimizer step over all parameters
// (the engine's kernels on one rank: sum of squares, AdamW zeroing the gradient); the
// "+optimizer" line adds the best of each.
//
// Model GFLOPS use docs/DESIGN.md section 6 with f = 3 (no recomputation).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

#include "mics/core/error.hpp"
#include "mics/device/backend.hpp"
#include "mics/model/layout.hpp"
#include "mics/model/transformer.hpp"

namespace po = boost::program_options;
using mics::device::AdamWParams;
using mics::device::AttentionShape;
using mics::device::DType;
using Clock = std::chrono::steady_clock;

namespace {

// The 1-minute load average: other jobs share these cores, and the record says how many.
std::string load_average() {
  std::FILE* f = std::fopen("/proc/loadavg", "r");
  if (f == nullptr) return "unknown";
  char buf[64] = {0};
  const bool ok = std::fgets(buf, sizeof buf, f) != nullptr;
  std::fclose(f);
  if (!ok) return "unknown";
  std::string s(buf);
  return s.substr(0, s.find(' '));
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// A Backend that forwards every call to another one and adds up the time (and, for GEMMs,
// the FLOPs) per kernel: the profile behind --profile.
class TimingBackend final : public mics::device::Backend {
public:
  explicit TimingBackend(mics::device::Backend& inner) : inner_(inner) {}
  struct Entry { double seconds = 0, flops = 0; long calls = 0; };
  std::map<std::string, Entry> entries;

  std::string name() const override { return inner_.name(); }
  bool is_host_memory() const override { return inner_.is_host_memory(); }
  bool supports(DType dt) const override { return inner_.supports(dt); }
  int threads() const override { return inner_.threads(); }
  void* allocate(std::size_t b) override { return inner_.allocate(b); }
  void deallocate(void* p) noexcept override { inner_.deallocate(p); }
  void* allocate_host(std::size_t b) override { return inner_.allocate_host(b); }
  void deallocate_host(void* p) noexcept override { inner_.deallocate_host(p); }
  std::size_t bytes_in_use() const override { return inner_.bytes_in_use(); }
  std::size_t peak_bytes_in_use() const override { return inner_.peak_bytes_in_use(); }
  void reset_peak() override { inner_.reset_peak(); }
  void copy_to_device(void* d, const void* s, std::size_t b, mics::device::Stream* st) override {
    Timer t(*this, "copy");
    inner_.copy_to_device(d, s, b, st);
  }
  void copy_to_host(void* d, const void* s, std::size_t b, mics::device::Stream* st) override {
    Timer t(*this, "copy");
    inner_.copy_to_host(d, s, b, st);
  }
  void copy(void* d, const void* s, std::size_t b, mics::device::Stream* st) override {
    Timer t(*this, "copy");
    inner_.copy(d, s, b, st);
  }
  mics::device::Stream& compute_stream() override { return inner_.compute_stream(); }
  std::unique_ptr<mics::device::Stream> create_stream() override { return inner_.create_stream(); }
  std::unique_ptr<mics::device::Event> create_event() override { return inner_.create_event(); }
  void synchronize() override { inner_.synchronize(); }

  void fill(DType dt, void* x, std::int64_t n, double value) override {
    Timer t(*this, "fill");
    inner_.fill(dt, x, n, value);
  }
  void scale(DType dt, void* x, std::int64_t n, double alpha) override {
    Timer t(*this, "scale");
    inner_.scale(dt, x, n, alpha);
  }
  void axpy(DType dt, void* y, const void* x, std::int64_t n, double alpha) override {
    Timer t(*this, "axpy");
    inner_.axpy(dt, y, x, n, alpha);
  }
  void add(DType dt, void* out, const void* a, const void* b, std::int64_t n) override {
    Timer t(*this, "add");
    inner_.add(dt, out, a, b, n);
  }
  void cast(DType dst_dt, void* dst, DType src_dt, const void* src, std::int64_t n) override {
    Timer t(*this, "cast");
    inner_.cast(dst_dt, dst, src_dt, src, n);
  }
  void accumulate(DType dst_dt, void* dst, DType src_dt, const void* src, std::int64_t n, double alpha) override {
    Timer t(*this, "accumulate");
    inner_.accumulate(dst_dt, dst, src_dt, src, n, alpha);
  }
  double sum_squares(DType dt, const void* x, std::int64_t n) override {
    Timer t(*this, "sum_squares");
    return inner_.sum_squares(dt, x, n);
  }
  double sum(DType dt, const void* x, std::int64_t n) override {
    Timer t(*this, "sum");
    return inner_.sum(dt, x, n);
  }
  void gemm(DType dt, bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, double alpha, const void* A, std::int64_t lda, const void* B, std::int64_t ldb, double beta, void* C, std::int64_t ldc) override {
    Timer t(*this, trans_a ? (trans_b ? "gemm TT" : "gemm TN") : (trans_b ? "gemm NT" : "gemm NN"),
            2.0 * static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K));
    inner_.gemm(dt, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  void gemm_strided_batched(DType dt, bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, double alpha, const void* A, std::int64_t lda, std::int64_t stride_a, const void* B, std::int64_t ldb, std::int64_t stride_b, double beta, void* C, std::int64_t ldc, std::int64_t stride_c, std::int64_t batch) override {
    Timer t(*this, "gemm_strided_batched");
    inner_.gemm_strided_batched(dt, trans_a, trans_b, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc, stride_c, batch);
  }
  void add_bias(DType dt, void* out, const void* bias, std::int64_t N, std::int64_t C) override {
    Timer t(*this, "add_bias");
    inner_.add_bias(dt, out, bias, N, C);
  }
  void bias_backward(DType dt, void* dbias, const void* dout, std::int64_t N, std::int64_t C) override {
    Timer t(*this, "bias_backward");
    inner_.bias_backward(dt, dbias, dout, N, C);
  }
  void linear_forward(DType dt, void* out, const void* inp, const void* weight, const void* bias, const void* residual, std::int64_t N, std::int64_t OC, std::int64_t IC) override {
    Timer t(*this, residual != nullptr ? "linear+residual NT" : "linear NT",
            2.0 * static_cast<double>(N) * static_cast<double>(OC) * static_cast<double>(IC));
    inner_.linear_forward(dt, out, inp, weight, bias, residual, N, OC, IC);
  }
  void embedding_forward(DType dt, void* out, const std::int32_t* tokens, const void* wte, const void* wpe, std::int64_t B, std::int64_t T, std::int64_t C) override {
    Timer t(*this, "embedding_forward");
    inner_.embedding_forward(dt, out, tokens, wte, wpe, B, T, C);
  }
  void embedding_backward(DType dt, void* dwte, void* dwpe, const void* dout, const std::int32_t* tokens, std::int64_t B, std::int64_t T, std::int64_t C) override {
    Timer t(*this, "embedding_backward");
    inner_.embedding_backward(dt, dwte, dwpe, dout, tokens, B, T, C);
  }
  void layernorm_forward(DType dt, void* out, void* mean, void* rstd, const void* inp, const void* weight, const void* bias, std::int64_t N, std::int64_t C, double eps) override {
    Timer t(*this, "layernorm_forward");
    inner_.layernorm_forward(dt, out, mean, rstd, inp, weight, bias, N, C, eps);
  }
  void layernorm_backward(DType dt, void* dinp, void* dweight, void* dbias, const void* dout, const void* inp, const void* weight, const void* mean, const void* rstd, std::int64_t N, std::int64_t C) override {
    Timer t(*this, "layernorm_backward");
    inner_.layernorm_backward(dt, dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
  }
  void gelu_forward(DType dt, void* out, const void* inp, std::int64_t n) override {
    Timer t(*this, "gelu_forward");
    inner_.gelu_forward(dt, out, inp, n);
  }
  void gelu_backward(DType dt, void* dinp, const void* inp, const void* dout, std::int64_t n) override {
    Timer t(*this, "gelu_backward");
    inner_.gelu_backward(dt, dinp, inp, dout, n);
  }
  void gelu_backward_bias(DType dt, void* dinp, void* dbias, const void* inp, const void* dout, std::int64_t N, std::int64_t C) override {
    Timer t(*this, "gelu_backward_bias");
    inner_.gelu_backward_bias(dt, dinp, dbias, inp, dout, N, C);
  }
  std::size_t attention_saved_bytes(DType dt, const AttentionShape& s) const override { return inner_.attention_saved_bytes(dt, s); }
  void attention_forward(DType dt, const AttentionShape& s, void* out, void* saved, const void* qkv) override {
    Timer t(*this, "attention_forward");
    inner_.attention_forward(dt, s, out, saved, qkv);
  }
  void attention_backward(DType dt, const AttentionShape& s, void* dqkv, const void* dout, const void* qkv, const void* out, const void* saved) override {
    Timer t(*this, "attention_backward");
    inner_.attention_backward(dt, s, dqkv, dout, qkv, out, saved);
  }
  void cross_entropy_forward(DType dt, void* losses, const void* logits, const std::int32_t* targets, std::int64_t N, std::int64_t V, std::int64_t ld) override {
    Timer t(*this, "cross_entropy_forward");
    inner_.cross_entropy_forward(dt, losses, logits, targets, N, V, ld);
  }
  void cross_entropy_backward(DType dt, void* dlogits, const void* logits, const std::int32_t* targets, std::int64_t N, std::int64_t V, std::int64_t ld, double grad_scale) override {
    Timer t(*this, "cross_entropy_backward");
    inner_.cross_entropy_backward(dt, dlogits, logits, targets, N, V, ld, grad_scale);
  }
  void cross_entropy_forward_lse(DType dt, void* losses, void* lse, const void* logits, const std::int32_t* targets, std::int64_t N, std::int64_t V, std::int64_t ld) override {
    Timer t(*this, "cross_entropy_forward");
    inner_.cross_entropy_forward_lse(dt, losses, lse, logits, targets, N, V, ld);
  }
  void cross_entropy_backward_lse(DType dt, void* dlogits, const void* logits, const void* lse, const std::int32_t* targets, std::int64_t N, std::int64_t V, std::int64_t ld, double grad_scale) override {
    Timer t(*this, "cross_entropy_backward");
    inner_.cross_entropy_backward_lse(dt, dlogits, logits, lse, targets, N, V, ld, grad_scale);
  }
  void adamw_zero_grad(DType dt, void* param, void* m, void* v, DType grad_dt, void* grad, std::int64_t n, const AdamWParams& p) override {
    Timer t(*this, "adamw");
    inner_.adamw_zero_grad(dt, param, m, v, grad_dt, grad, n, p);
  }
  void adamw(DType dt, void* param, void* m, void* v, DType grad_dt, const void* grad, std::int64_t n, const AdamWParams& p) override {
    Timer t(*this, "adamw");
    inner_.adamw(dt, param, m, v, grad_dt, grad, n, p);
  }

private:
  struct Timer {
    TimingBackend& be;
    const char* what;
    double flops;
    Clock::time_point t0 = Clock::now();
    Timer(TimingBackend& b, const char* w, double f = 0) : be(b), what(w), flops(f) {}
    ~Timer() {
      be.inner_.synchronize();
      Entry& e = be.entries[what];
      e.seconds += seconds_since(t0);
      e.flops += flops;
      ++e.calls;
    }
  };
  mics::device::Backend& inner_;
};

// Best-of-`reps` rate of one GEMM shape in type dt on the backend, in GFLOP/s.
double gemm_rate(mics::device::Backend& be, DType dt, bool ta, bool tb, std::int64_t M, std::int64_t N,
                 std::int64_t K, int reps) {
  mics::device::Buffer A(be, dt, M * K), B(be, dt, K * N), C(be, dt, M * N);
  be.fill(dt, A.get(), M * K, 0.01);
  be.fill(dt, B.get(), K * N, 0.02);
  const std::int64_t lda = ta ? M : K, ldb = tb ? K : N;
  be.gemm(dt, ta, tb, M, N, K, 1.0, A.get(), lda, B.get(), ldb, 0.0, C.get(), N);
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    be.gemm(dt, ta, tb, M, N, K, 1.0, A.get(), lda, B.get(), ldb, 0.0, C.get(), N);
    be.synchronize();
    best = std::min(best, seconds_since(t0));
  }
  return 2.0 * static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K) / best / 1e9;
}

// The engine's optimizer step on one rank over the whole model, in f32 states. On one rank
// with compute type = state type the model writes its gradient straight into the
// engine's accumulator (here: the gradient buffers), so the step is its sum of squares
// (the clipping norm) and AdamW per bucket, which zeroes the accumulator as it reads it;
// the parameters themselves play the master weights. In bf16 the f32 master weights are
// updated from the bf16 gradients and cast into the bf16 parameters, as the engine does.
struct OptimizerStates {
  DType dt;
  std::vector<mics::device::Buffer> m, v, master;
  OptimizerStates(mics::device::Backend& be, const mics::model::BucketLayout& layout, DType compute,
                  const std::vector<mics::device::Buffer>& params)
      : dt(compute) {
    for (std::size_t b = 0; b < layout.buckets.size(); ++b) {
      const auto n = static_cast<std::int64_t>(layout.buckets[b].count);
      for (auto* s : {&m, &v}) {
        s->emplace_back(be, DType::f32, n);
        be.fill(DType::f32, s->back().get(), n, 0.0);
      }
      if (dt == DType::f32) continue;
      master.emplace_back(be, DType::f32, n);
      be.cast(DType::f32, master.back().get(), dt, params[b].get(), n);
    }
  }
  double step(mics::device::Backend& be, const mics::model::BucketLayout& layout, std::vector<mics::device::Buffer>& params,
              const std::vector<void*>& grads, int step) {
    double norm2 = 0;
    for (std::size_t b = 0; b < layout.buckets.size(); ++b)
      norm2 += be.sum_squares(dt, grads[b], static_cast<std::int64_t>(layout.buckets[b].count));
    AdamWParams hp;
    hp.lr = 1e-4;
    hp.weight_decay = 0.1;
    hp.grad_scale = std::min(1.0, 1.0 / (std::sqrt(norm2) + 1e-6));
    hp.step = step;
    for (std::size_t b = 0; b < layout.buckets.size(); ++b) {
      const auto n = static_cast<std::int64_t>(layout.buckets[b].count);
      void* w = dt == DType::f32 ? params[b].get() : master[b].get();
      be.adamw_zero_grad(DType::f32, w, m[b].get(), v[b].get(), dt, grads[b], n, hp);
      if (dt != DType::f32) be.cast(dt, params[b].get(), DType::f32, w, n);
    }
    be.synchronize();
    return norm2;
  }
};

// The GEMM shapes of the model's own layers at N = batch x seq tokens: the limit.
struct Shape { const char* what; bool ta, tb; std::int64_t M, N, K; };
std::vector<Shape> limit_shapes(const mics::model::ModelConfig& cfg, std::int64_t N) {
  const std::int64_t C = cfg.hidden;
  return {{"qkv fwd   [N,3C]=[N,C]x[3C,C]^T", false, true, N, 3 * C, C},
          {"fc fwd    [N,4C]=[N,C]x[4C,C]^T", false, true, N, 4 * C, C},
          {"fc dW     [4C,C]=[N,4C]^T x[N,C]", true, false, 4 * C, C, N},
          {"head fwd  [N,V]=[N,C]x[V,C]^T", false, true, N, cfg.vocab, C}};
}

// --sgemm-only: the limit alone, without building the model, so that a benchmark of
// another program (validation/bench-vs-pytorch.sh) can measure it between its own runs.
// The last line, "sgemm_limit_gflops X", is the best rate over the shapes.
int print_sgemm_only(mics::device::Backend& be, DType dt, const mics::model::ModelConfig& cfg,
                     std::int64_t N, int iters) {
  double limit = 0;
  std::printf("# mics-bench-model --sgemm-only: %s, cpu backend, %d threads, N = %lld tokens, "
              "best of %d calls per shape\n", mics::device::dtype_name(dt), be.threads(),
              static_cast<long long>(N), 2 * iters);
  if (dt == DType::bf16)
    std::printf("# bf16 GEMM path: %s\n", mics::device::cpu_bf16_gemm_path().c_str());
  for (const auto& sh : limit_shapes(cfg, N)) {
    const double rate = gemm_rate(be, dt, sh.ta, sh.tb, sh.M, sh.N, sh.K, 2 * iters);
    limit = std::max(limit, rate);
    std::printf("%-36s %12.1f\n", sh.what, rate);
  }
  // f32 keeps the name the scripts parse; any type: "<dtype>_gemm_limit_gflops".
  if (dt == DType::f32) std::printf("sgemm_limit_gflops %.2f\n", limit);
  else std::printf("%s_gemm_limit_gflops %.2f\n", mics::device::dtype_name(dt), limit);
  return 0;
}

int run(int argc, char** argv) {
  int threads = 2, iters = 3, warmup = 1;
  mics::model::ModelConfig cfg;
  cfg.name = "gpt2-small-like";
  cfg.variant = mics::model::Variant::gpt;
  std::int64_t batch = 4;
  po::options_description d("mics-bench-model options");
  d.add_options()("help", "this help")
      ("threads", po::value(&threads)->default_value(2), "CPU threads (OpenMP and BLAS)")
      ("layers", po::value(&cfg.layers)->default_value(4), "transformer blocks")
      ("hidden", po::value(&cfg.hidden)->default_value(768), "hidden size")
      ("heads", po::value(&cfg.heads)->default_value(12), "attention heads")
      ("seq", po::value(&cfg.seq)->default_value(256), "sequence length")
      ("vocab", po::value(&cfg.vocab)->default_value(50257), "vocabulary")
      ("batch", po::value(&batch)->default_value(4), "micro-batch (sequences)")
      ("iters", po::value(&iters)->default_value(3), "timed forward+backward passes")
      ("warmup", po::value(&warmup)->default_value(1), "untimed passes first")
      ("profile", "also time one step kernel by kernel (synchronising after each call)")
      ("recompute", "recompute block activations in backward (model GFLOPS still count f=3)")
      ("compute-dtype", po::value<std::string>()->default_value("f32"),
       "f32 or bf16 (bf16 parameters and activations, f32 master weights and optimizer)")
      ("sgemm-only", "print only the GEMM rate in the compute type on the model's GEMM shapes "
                     "(the limit) and exit");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, d), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw mics::UsageError(e.what());
  }
  if (vm.count("help")) {
    std::cout << d;
    return 0;
  }
  if (threads < 1 || iters < 1 || warmup < 0)
    throw mics::UsageError("--threads and --iters must be at least 1, --warmup at least 0");
  cfg.validate("mics-bench-model");

  const DType dt = mics::device::parse_dtype(vm["compute-dtype"].as<std::string>());
  if (dt != DType::f32 && dt != DType::bf16) throw mics::UsageError("--compute-dtype must be f32 or bf16");
  auto be = mics::device::make_cpu_backend(threads);
  if (vm.count("sgemm-only")) return print_sgemm_only(*be, dt, cfg, batch * cfg.seq, iters);
  const bool recompute = vm.count("recompute") > 0;
  mics::model::Transformer model(cfg, *be, dt, batch, recompute);
  const auto& layout = model.layout();
  std::vector<mics::device::Buffer> params, grads;
  std::vector<const void*> pp;
  std::vector<void*> gp;
  for (std::size_t b = 0; b < layout.buckets.size(); ++b) {
    const std::size_t n = layout.buckets[b].count;
    std::vector<float> host(n);
    mics::model::init_bucket(cfg, layout, static_cast<int>(b), 0, n, DType::f32, host.data(), 1234);
    mics::device::Buffer staged(*be, DType::f32, static_cast<std::int64_t>(n));
    be->copy_to_device(staged.get(), host.data(), n * sizeof(float));
    params.emplace_back(*be, dt, static_cast<std::int64_t>(n));
    grads.emplace_back(*be, dt, static_cast<std::int64_t>(n));
    be->cast(dt, params.back().get(), DType::f32, staged.get(), static_cast<std::int64_t>(n));
    be->fill(dt, grads.back().get(), static_cast<std::int64_t>(n), 0.0);
    pp.push_back(params.back().get());
    gp.push_back(grads.back().get());
  }
  const std::int64_t N = batch * cfg.seq;
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(N)), targets(tokens.size());
  std::mt19937 rng(7);
  for (auto& t : tokens) t = static_cast<std::int32_t>(rng() % static_cast<unsigned>(cfg.vocab));
  for (std::size_t i = 0; i < tokens.size(); ++i) targets[i] = tokens[(i + 1) % tokens.size()];
  model.set_batch(tokens.data(), targets.data());

  const std::string load_before = load_average();
  double loss = 0;
  for (int i = 0; i < warmup; ++i) loss = model.forward_backward(pp, gp);
  // The limit: the same backend's sgemm on the model's own GEMM shapes, same threads,
  // measured between the timed steps so that both see the same machine load (other jobs
  // share these cores); best of all repetitions for both.
  const std::vector<Shape> shapes = limit_shapes(cfg, N);
  std::vector<double> shape_best(std::size(shapes), 0.0);
  double best = 1e30, total = 0, fwd_best = 1e30, opt_best = 1e30;
  OptimizerStates opt(*be, layout, dt, params);
  for (int i = 0; i < iters; ++i) {
    for (std::size_t k = 0; k < std::size(shapes); ++k) {
      const auto& sh = shapes[k];
      shape_best[k] = std::max(shape_best[k], gemm_rate(*be, dt, sh.ta, sh.tb, sh.M, sh.N, sh.K, 2));
    }
    auto t0 = Clock::now();
    model.forward(pp);
    fwd_best = std::min(fwd_best, seconds_since(t0));
    t0 = Clock::now();
    loss = model.forward_backward(pp, gp);
    be->synchronize();
    const double s = seconds_since(t0);
    best = std::min(best, s);
    total += s;
    t0 = Clock::now();
    opt.step(*be, layout, params, gp, i + 1);
    opt_best = std::min(opt_best, seconds_since(t0));
  }
  // Where the time goes: one step through the bucket calls, each phase timed, with the
  // FLOPs its GEMMs and attention products actually execute.
  const std::int64_t Cc = cfg.hidden, T = cfg.seq, V = cfg.vocab, L = cfg.layers;
  const double n = static_cast<double>(N), c = static_cast<double>(Cc),
               t = static_cast<double>(T), v = static_cast<double>(V);
  struct Phase { const char* name; double seconds; double flops; };
  std::vector<Phase> phases = {{"embedding fwd", 0, 0},
                               {"blocks fwd", 0, L * (24 * n * c * c + 4 * n * t * c)},
                               {"head fwd (lnf, logits, loss)", 0, 2 * n * c * v},
                               {"head bwd", 0, 4 * n * c * v},
                               {"blocks bwd", 0, L * (48 * n * c * c + 8 * n * t * c)},
                               {"embedding bwd", 0, 0}};
  {
    const int lnf = mics::model::final_norm_bucket(cfg);
    auto timed = [&](int i, auto&& f) {
      const auto t0 = Clock::now();
      f();
      be->synchronize();
      phases[static_cast<std::size_t>(i)].seconds += seconds_since(t0);
    };
    timed(0, [&] { model.embed_forward(pp[0]); });
    timed(1, [&] { for (int l = 0; l < L; ++l) model.block_forward(l, pp[static_cast<std::size_t>(l + 1)]); });
    timed(2, [&] { model.head_forward(pp[static_cast<std::size_t>(lnf)], pp[0]); });
    timed(3, [&] { model.head_backward(pp[static_cast<std::size_t>(lnf)], pp[0], gp[static_cast<std::size_t>(lnf)], gp[0]); });
    timed(4, [&] { for (int l = static_cast<int>(L) - 1; l >= 0; --l) model.block_backward(l, pp[static_cast<std::size_t>(l + 1)], gp[static_cast<std::size_t>(l + 1)]); });
    timed(5, [&] { model.embed_backward(pp[0], gp[0]); });
  }
  const double flops = mics::model::training_flops(cfg, static_cast<double>(batch), false);
  const double model_gflops = flops / best / 1e9;

  double limit = 0;
  std::printf("# mics-bench-model: %s, %lld layers, hidden %lld, heads %lld, seq %lld, vocab %lld, "
              "micro-batch %lld, %s, cpu backend, %d threads%s\n",
              cfg.name.c_str(), static_cast<long long>(cfg.layers), static_cast<long long>(cfg.hidden),
              static_cast<long long>(cfg.heads), static_cast<long long>(cfg.seq),
              static_cast<long long>(cfg.vocab), static_cast<long long>(batch), mics::device::dtype_name(dt), threads,
              recompute ? ", recomputation" : "");
  if (dt == DType::bf16)
    std::printf("# bf16 GEMM path: %s\n", mics::device::cpu_bf16_gemm_path().c_str());
  std::printf("# load average (1 min) %s before, %s after the timed steps; OMP_WAIT_POLICY=%s\n",
              load_before.c_str(), load_average().c_str(),
              std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "(unset)");
  std::printf("# parameters %zu, activations %.1f MiB, model FLOPs per step %.4g (f=3)\n",
              layout.parameter_count(), static_cast<double>(model.activation_bytes()) / (1 << 20), flops);
  std::printf("%-36s %12s\n", dt == DType::f32 ? "sgemm shape (limit)" : "bf16 GEMM shape (limit)", "GFLOP/s");
  for (std::size_t k = 0; k < std::size(shapes); ++k) {
    limit = std::max(limit, shape_best[k]);
    std::printf("%-36s %12.1f\n", shapes[k].what, shape_best[k]);
  }
  std::printf("\n%-10s %10s %10s %12s %12s %14s %12s %10s\n", "loss", "fwd ms", "step ms", "mean ms",
              "tokens/s", "model GFLOPS", "sgemm GF/s", "fraction");
  std::printf("%-10.4f %10.1f %10.1f %12.1f %12.0f %14.1f %12.1f %9.1f%%\n", loss, fwd_best * 1e3,
              best * 1e3, total / iters * 1e3, static_cast<double>(N) / best, model_gflops, limit,
              100.0 * model_gflops / limit);
  // With the optimizer: forward+backward plus one optimizer step over all parameters
  // (norm, AdamW with zeroing), the best of each.
  const double full = best + opt_best;
  std::printf("%-10s %10.1f %10.1f %12s %12.0f %14.1f %12.1f %9.1f%%   (optimizer %.1f ms)\n", "+optimizer",
              fwd_best * 1e3, full * 1e3, "", static_cast<double>(N) / full, flops / full / 1e9, limit,
              100.0 * flops / full / 1e9 / limit, opt_best * 1e3);
  double executed = 0, phase_total = 0;
  std::printf("\n%-30s %10s %14s %12s\n", "phase (one step, bucket calls)", "ms", "GEMM GFLOP", "GFLOP/s");
  for (const auto& ph : phases) {
    executed += ph.flops;
    phase_total += ph.seconds;
    std::printf("%-30s %10.1f %14.2f %12.1f\n", ph.name, ph.seconds * 1e3, ph.flops / 1e9,
                ph.seconds > 0 ? ph.flops / ph.seconds / 1e9 : 0.0);
  }
  std::printf("%-30s %10.1f %14.2f %12.1f\n", "total", phase_total * 1e3, executed / 1e9,
              executed / phase_total / 1e9);
  std::printf("# model FLOPs (formula, f=3) / executed GEMM FLOPs = %.3f\n", flops / executed);

  if (vm.count("profile")) {
    TimingBackend tb(*be);
    mics::model::Transformer pm(cfg, tb, dt, batch, recompute);
    pm.set_batch(tokens.data(), targets.data());
    // One untimed step first: the new model's activations are fresh pages, and their first
    // touch (page faults) would be booked to whichever kernel writes them first.
    pm.forward_backward(pp, gp);
    tb.entries.clear();
    const auto t0 = Clock::now();
    pm.forward_backward(pp, gp);
    const double step = seconds_since(t0);
    std::vector<std::pair<std::string, TimingBackend::Entry>> rows(tb.entries.begin(), tb.entries.end());
    std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) { return a.second.seconds > b.second.seconds; });
    std::printf("\n%-24s %8s %10s %8s %10s\n", "kernel (one step)", "calls", "ms", "share", "GFLOP/s");
    for (const auto& [name, e] : rows)
      std::printf("%-24s %8ld %10.1f %7.1f%% %10.1f\n", name.c_str(), e.calls, e.seconds * 1e3,
                  100 * e.seconds / step, e.flops > 0 ? e.flops / e.seconds / 1e9 : 0.0);
    std::printf("%-24s %8s %10.1f\n", "step", "", step * 1e3);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const mics::Error& e) {
    std::fprintf(stderr, "mics-bench-model: error: %s\n", e.what());
    return 1;
  }
}
