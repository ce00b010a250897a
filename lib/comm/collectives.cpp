#include "mics/comm/collectives.hpp"

#include <exception>
#include <utility>

#include "mics/core/check.hpp"
#include "mics/core/watchdog.hpp"

namespace mics::comm {

// ---- Request ---------------------------------------------------------------------------

Request& Request::operator=(Request&& other) {
  if (this != &other) {
    if (op_) wait();
    op_ = std::move(other.op_);
  }
  return *this;
}

Request::~Request() {
  if (!op_) return;
  // Waiting keeps buffers safe when a caller forgets; during unwinding the peers may never
  // join, and the job is ending anyway.
  if (std::uncaught_exceptions() > 0) return;
  try {
    op_->wait();
  } catch (...) {
  }
}

bool Request::test() {
  if (!op_) return true;
  if (!op_->test()) return false;
  op_.reset();
  return true;
}

void Request::wait() {
  if (!op_) return;
  const watchdog::Scope stall_guard(
      [](const void* op) { return static_cast<const detail::PendingOp*>(op)->describe(); }, op_.get());
  op_->wait();
  op_.reset();
}

// ---- two-step chains ---------------------------------------------------------------------

struct Collectives::Chain {
  Request step1;
  std::function<Request()> start2;
  Request step2;
  bool started2 = false;
  std::shared_ptr<void> keep;  // the temporary between the steps
};

class Collectives::ChainOp final : public detail::PendingOp {
public:
  ChainOp(Collectives* owner, std::shared_ptr<Chain> chain) : owner_(owner), chain_(std::move(chain)) {}
  bool test() override {
    owner_->start_ready_chains(nullptr);
    if (!chain_->started2 || !chain_->step2.test()) return false;
    chain_->keep.reset();
    return true;
  }
  void wait() override {
    if (!chain_->started2) owner_->start_ready_chains(chain_.get());
    chain_->step2.wait();
    chain_->keep.reset();
  }

private:
  Collectives* owner_;
  std::shared_ptr<Chain> chain_;
};

Request Collectives::chain(Request step1, std::function<Request()> step2, std::shared_ptr<void> keep) {
  auto c = std::make_shared<Chain>();
  c->step1 = std::move(step1);
  c->start2 = std::move(step2);
  c->keep = std::move(keep);
  waiting_.push_back(c);
  return Request(std::make_unique<ChainOp>(this, std::move(c)));
}

// Second steps run on the twin communicators, and start at a time that depends on when
// each rank notices that step 1 is over. Starting them strictly oldest first gives every
// rank the same order on each twin, which is all MPI and NCCL ask for.
void Collectives::start_ready_chains(const Chain* must_start) {
  while (!waiting_.empty()) {
    Chain& c = *waiting_.front();
    if (must_start != nullptr) {
      c.step1.wait();
    } else if (!c.step1.test()) {
      return;
    }
    c.step2 = c.start2();
    c.start2 = nullptr;
    c.started2 = true;
    const bool reached = &c == must_start;
    waiting_.pop_front();
    if (reached) return;
  }
}

Request Collectives::gather_partition(void* buf, std::size_t chunk_count, DType dt,
                                      ProcessGroups& groups, bool hierarchical) {
  if (!hierarchical || !groups.spans_nodes())
    return all_gather(buf, chunk_count, dt, groups.partition());
  // Rank (i, j) holds chunk q = j*k + i. Step 1 gathers chunks j*k .. j*k+k-1 (contiguous,
  // in inter-rank order i) into block j; step 2 gathers the g blocks of k*c in intra-rank
  // order j. Every chunk lands at its canonical place: no reordering copy.
  // One rank per node: step 1 over inter is already the whole gather (k = p, j = 0), and
  // step 2 would be a gather over a group of one.
  if (groups.intra().size() == 1) return all_gather(buf, chunk_count, dt, groups.inter());
  const auto k = static_cast<std::size_t>(groups.plan().nodes_per_group());
  const auto j = static_cast<std::size_t>(groups.placement().group_local);
  char* base = static_cast<char*>(buf);
  const std::size_t block = k * chunk_count;
  Group& intra = groups.intra().twin();
  prepare(intra);
  Request step1 = all_gather(base + j * block * dtype_size(dt), chunk_count, dt, groups.inter());
  return then(std::move(step1), [this, base, block, dt, &intra] {
    return all_gather(base, block, dt, intra);
  }, nullptr);
}

Request Collectives::reduce_scatter_partition(const void* send, void* recv, std::size_t chunk_count,
                                              DType dt, ProcessGroups& groups, bool hierarchical) {
  if (!hierarchical || !groups.spans_nodes())
    return reduce_scatter(send, recv, chunk_count, dt, groups.partition());
  // The mirror of gather_partition: step 1 sums block j (chunks j*k .. j*k+k-1) over the
  // node into a k*c temporary; step 2 sums chunk i of it over the k nodes, which is chunk
  // q = j*k + i of the whole buffer. With one rank per node step 1 would only copy send
  // into the temporary: reduce-scatter send over inter directly (chunk i is chunk q).
  if (groups.intra().size() == 1) return reduce_scatter(send, recv, chunk_count, dt, groups.inter());
  const auto k = static_cast<std::size_t>(groups.plan().nodes_per_group());
  const std::size_t block = k * chunk_count;
  std::shared_ptr<void> temp = allocate_temp(block * dtype_size(dt));
  void* t = temp.get();
  Group& inter = groups.inter().twin();
  prepare(inter);
  Request step1 = reduce_scatter(send, t, block, dt, groups.intra());
  return then(std::move(step1), [this, t, recv, chunk_count, dt, &inter] {
    return reduce_scatter(t, recv, chunk_count, dt, inter);
  }, std::move(temp));
}

}  // namespace mics::comm
