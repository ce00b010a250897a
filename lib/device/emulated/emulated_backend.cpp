// Emulated backend: a compute model for scaling studies on machines with few cores.
// Memory, host<->device copies, streams and events are the CPU backend's (every buffer
// is allocated and every byte the engine stages is really moved, and collectives carry
// real data), but each kernel's arithmetic (device-internal copies included) is replaced by waiting the time a device of the given speed
// would take: max(FLOPs / peak, bytes touched / memory bandwidth) (a roofline). The wait
// sleeps, so sixteen emulated ranks can share two cores with the network stack.
//
// The modelled work goes into a queue the way a GPU stream's does: a kernel extends the
// queue's due time, and the host sleeps until it only once more than kSlack is pending,
// or at any point where a result must be complete (stream or event synchronisation,
// host copies, host reductions). Several tiny kernels thus cost one sleep, not one each;
// work the engine hands to communication without synchronising (the CPU path has no
// events) runs ahead of the model by at most kSlack; and a sleep that wakes late is
// paid back by the kernels after it (see work()).
//
// Nothing is computed: buffers keep whatever they held, and the host reductions (the
// losses, the gradient norm) return NaN; computes_values() says so to the reports.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <sstream>
#include <thread>

#include "mics/core/error.hpp"
#include "mics/device/backend.hpp"

namespace mics::device {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kSlack = std::chrono::microseconds(200);

double size_of(DType dt) { return static_cast<double>(dtype_size(dt)); }
double d(std::int64_t v) { return static_cast<double>(v); }

class EmulatedBackend final : public Backend {
public:
  EmulatedBackend(double tflops, double mem_gbps)
      : flops_per_s_(tflops * 1e12), bytes_per_s_(mem_gbps * 1e9), host_(make_cpu_backend(1)) {
    if (!(std::isfinite(tflops) && tflops > 0))
      throw UsageError("emulated backend: the compute rate must be a positive number of TFLOPS");
    if (!(std::isfinite(mem_gbps) && mem_gbps >= 0))
      throw UsageError("emulated backend: the memory bandwidth must be 0 (not modelled) or a positive GB/s");
  }

  std::string name() const override {
    std::ostringstream os;
    os << "emulated(" << flops_per_s_ / 1e12 << " TFLOPS";
    if (bytes_per_s_ > 0) os << ", " << bytes_per_s_ / 1e9 << " GB/s";
    os << ")";
    return os.str();
  }
  bool is_host_memory() const override { return true; }
  // Nothing is computed, so any type works; bf16 is what a GPU would compute in, and
  // halves the bytes of every gather and gradient reduction (as on the seed's clusters).
  bool supports(DType) const override { return true; }
  double peak_flops(DType) const override { return flops_per_s_; }
  bool computes_values() const override { return false; }
  double modelled_seconds() const override { return modelled_s_; }

  // --- memory, copies, streams: real, on the host -----------------------------------------
  void* allocate(std::size_t bytes) override { return host_->allocate(bytes); }
  void deallocate(void* p) noexcept override { host_->deallocate(p); }
  void* allocate_host(std::size_t bytes) override { return host_->allocate_host(bytes); }
  void deallocate_host(void* p) noexcept override { host_->deallocate_host(p); }
  std::size_t bytes_in_use() const override { return host_->bytes_in_use(); }
  std::size_t peak_bytes_in_use() const override { return host_->peak_bytes_in_use(); }
  void reset_peak() override { host_->reset_peak(); }

  // A copy reads what the queued kernels wrote, so they finish first.
  void copy_to_device(void* dst, const void* src, std::size_t bytes, Stream* s) override {
    settle();
    host_->copy_to_device(dst, src, bytes, s);
  }
  void copy_to_host(void* dst, const void* src, std::size_t bytes, Stream* s) override {
    settle();
    host_->copy_to_host(dst, src, bytes, s);
  }
  // A copy within the device is a kernel like any other (on a GPU, a device-to-device
  // copy at memory speed): modelled, not done, since no value on the device means
  // anything here. Host<->device copies above are real: they are the staging the engine
  // does around communication.
  void copy(void*, const void*, std::size_t bytes, Stream*) override {
    work(0, 2 * static_cast<double>(bytes));
  }

  Stream& compute_stream() override { return stream_; }
  std::unique_ptr<Stream> create_stream() override { return std::make_unique<SettlingStream>(*this); }
  std::unique_ptr<Event> create_event() override { return std::make_unique<SettlingEvent>(*this); }
  void synchronize() override { settle(); }

  // --- kernels: modelled time only --------------------------------------------------------
  // Only GEMMs and attention are charged FLOPs (at the peak rate, as the model FLOPs
  // formula counts them); the elementwise kernels are charged their bytes, since on a
  // GPU they run at memory speed, far below the peak.
  void fill(DType dt, void*, std::int64_t n, double) override { work(0, d(n) * size_of(dt)); }
  void scale(DType dt, void*, std::int64_t n, double) override { work(0, 2 * d(n) * size_of(dt)); }
  void axpy(DType dt, void*, const void*, std::int64_t n, double) override {
    work(0, 3 * d(n) * size_of(dt));
  }
  void add(DType dt, void*, const void*, const void*, std::int64_t n) override {
    work(0, 3 * d(n) * size_of(dt));
  }
  void cast(DType dst_dt, void*, DType src_dt, const void*, std::int64_t n) override {
    work(0, d(n) * (size_of(dst_dt) + size_of(src_dt)));
  }
  void accumulate(DType dst_dt, void*, DType src_dt, const void*, std::int64_t n, double) override {
    work(0, d(n) * (2 * size_of(dst_dt) + size_of(src_dt)));
  }
  double sum_squares(DType dt, const void*, std::int64_t n) override {
    work(0, d(n) * size_of(dt));
    settle();
    return std::numeric_limits<double>::quiet_NaN();
  }
  double sum(DType dt, const void*, std::int64_t n) override {
    work(0, d(n) * size_of(dt));
    settle();
    return std::numeric_limits<double>::quiet_NaN();
  }

  void gemm(DType dt, bool, bool, std::int64_t M, std::int64_t N, std::int64_t K, double,
            const void*, std::int64_t, const void*, std::int64_t, double beta, void*,
            std::int64_t) override {
    gemm_work(dt, M, N, K, 1, beta);
  }
  void gemm_strided_batched(DType dt, bool, bool, std::int64_t M, std::int64_t N, std::int64_t K,
                            double, const void*, std::int64_t, std::int64_t, const void*,
                            std::int64_t, std::int64_t, double beta, void*, std::int64_t,
                            std::int64_t, std::int64_t batch) override {
    gemm_work(dt, M, N, K, batch, beta);
  }
  void add_bias(DType dt, void*, const void*, std::int64_t N, std::int64_t C) override {
    work(0, 2 * d(N) * d(C) * size_of(dt));
  }
  void bias_backward(DType dt, void*, const void*, std::int64_t N, std::int64_t C) override {
    work(0, d(N) * d(C) * size_of(dt));
  }

  void embedding_forward(DType dt, void*, const std::int32_t*, const void*, const void*,
                         std::int64_t B, std::int64_t T, std::int64_t C) override {
    work(0, 3 * d(B) * d(T) * d(C) * size_of(dt));
  }
  void embedding_backward(DType dt, void*, void*, const void*, const std::int32_t*, std::int64_t B,
                          std::int64_t T, std::int64_t C) override {
    work(0, 5 * d(B) * d(T) * d(C) * size_of(dt));
  }
  void layernorm_forward(DType dt, void*, void*, void*, const void*, const void*, const void*,
                         std::int64_t N, std::int64_t C, double) override {
    work(0, 2 * d(N) * d(C) * size_of(dt));
  }
  void layernorm_backward(DType dt, void*, void*, void*, const void*, const void*, const void*,
                          const void*, const void*, std::int64_t N, std::int64_t C) override {
    work(0, 4 * d(N) * d(C) * size_of(dt));
  }
  void gelu_forward(DType dt, void*, const void*, std::int64_t n) override {
    work(0, 2 * d(n) * size_of(dt));
  }
  void gelu_backward(DType dt, void*, const void*, const void*, std::int64_t n) override {
    work(0, 3 * d(n) * size_of(dt));
  }

  std::size_t attention_saved_bytes(DType dt, const AttentionShape& s) const override {
    return host_->attention_saved_bytes(dt, s);
  }
  // Q K^T and P V: 2 x 2*T*T*HS FLOPs per (batch, head), the full square as the model
  // FLOPs formula counts it; the backward pass twice that. Bytes: a fused kernel's
  // (q, k, v in, out), not the T x T scores.
  void attention_forward(DType dt, const AttentionShape& s, void*, void*, const void*) override {
    work(4 * d(s.B) * d(s.NH) * d(s.T) * d(s.T) * d(s.HS),
         4 * d(s.B) * d(s.T) * d(s.NH * s.HS) * size_of(dt));
  }
  void attention_backward(DType dt, const AttentionShape& s, void*, const void*, const void*,
                          const void*, const void*) override {
    work(8 * d(s.B) * d(s.NH) * d(s.T) * d(s.T) * d(s.HS),
         8 * d(s.B) * d(s.T) * d(s.NH * s.HS) * size_of(dt));
  }
  void cross_entropy_forward(DType dt, void*, const void*, const std::int32_t*, std::int64_t N,
                             std::int64_t V, std::int64_t) override {
    work(0, d(N) * d(V) * size_of(dt));
  }
  void cross_entropy_backward(DType dt, void*, const void*, const std::int32_t*, std::int64_t N,
                              std::int64_t V, std::int64_t, double) override {
    work(0, 2 * d(N) * d(V) * size_of(dt));
  }
  void adamw(DType dt, void*, void*, void*, DType grad_dt, const void*, std::int64_t n,
             const AdamWParams&) override {
    work(0, d(n) * (6 * size_of(dt) + size_of(grad_dt)));
  }

private:
  // Streams and events are trivially complete, as on the CPU, once the queue has drained.
  class SettlingStream final : public Stream {
  public:
    explicit SettlingStream(EmulatedBackend& be) : be_(be) {}
    void synchronize() override { be_.settle(); }
    void* native() noexcept override { return nullptr; }

  private:
    EmulatedBackend& be_;
  };
  class SettlingEvent final : public Event {
  public:
    explicit SettlingEvent(EmulatedBackend& be) : be_(be) {}
    void record(Stream&) override {}
    void wait(Stream&) override {}
    void synchronize() override { be_.settle(); }
    bool ready() override { return Clock::now() >= be_.due_; }
    void* native() noexcept override { return nullptr; }

  private:
    EmulatedBackend& be_;
  };

  void gemm_work(DType dt, std::int64_t M, std::int64_t N, std::int64_t K, std::int64_t batch,
                 double beta) {
    const double operands = d(M) * d(K) + d(K) * d(N) + d(M) * d(N) * (beta != 0.0 ? 2 : 1);
    work(2 * d(M) * d(N) * d(K) * d(batch), operands * d(batch) * size_of(dt));
  }

  // Queues one kernel's modelled time: the roofline of its FLOPs and its bytes.
  void work(double flops, double bytes) {
    double seconds = flops / flops_per_s_;
    if (bytes_per_s_ > 0) seconds = std::max(seconds, bytes / bytes_per_s_);
    modelled_s_ += seconds;
    const auto now = Clock::now();
    // An idle queue restarts at `now`, less what the last sleep overshot: a late wake-up
    // is this emulation's artefact (a busy machine's scheduler), not device time, so the
    // next kernels pay it back instead of every sleep adding its lateness to the step.
    if (due_ < now) due_ = std::max(due_, now - late_);
    late_ = Clock::duration::zero();
    due_ += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    if (due_ - now > kSlack) sleep_until_due();
  }
  void settle() {
    if (Clock::now() < due_) sleep_until_due();
  }
  void sleep_until_due() {
    std::this_thread::sleep_until(due_);
    late_ = std::max(Clock::duration::zero(), Clock::now() - due_);
  }

  double flops_per_s_;
  double bytes_per_s_;
  std::unique_ptr<Backend> host_;
  SettlingStream stream_{*this};
  Clock::time_point due_{};
  Clock::duration late_{};   // how late the last sleep woke up, credited to the next kernel
  double modelled_s_ = 0.0;
};

}  // namespace

std::unique_ptr<Backend> make_emulated_backend(double tflops, double mem_gbps) {
  return std::make_unique<EmulatedBackend>(tflops, mem_gbps);
}

}  // namespace mics::device
