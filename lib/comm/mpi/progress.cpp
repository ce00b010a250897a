#include "progress.hpp"

#include <chrono>
#include <climits>
#include <exception>

#include "mics/core/check.hpp"
#include "mics/core/error.hpp"

namespace mics::comm::mpi {

Progress::Progress(bool threaded) {
  if (threaded) thread_ = std::thread([this] { loop(); });
}

Progress::~Progress() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Progress::submit(const std::shared_ptr<P2POp>& op) {
  detail::begin_busy(*op->traffic, MPI_Wtime());
  {
    std::lock_guard<std::mutex> lock(mu_);
    incoming_.push_back(op);
  }
  work_cv_.notify_one();
}

void Progress::submit(const std::shared_ptr<Chain>& chain) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    incoming_chains_.push_back(chain);
  }
  work_cv_.notify_one();
}

// Whoever holds poll_mu_ polls: the thread while the caller computes, the caller itself
// while it waits, so that a completion needs no hand-off through the scheduler.
bool Progress::try_poll(bool& moved) {
  std::unique_lock<std::mutex> pl(poll_mu_, std::try_to_lock);
  if (!pl.owns_lock()) return false;
  moved = poll();
  return true;
}

// The thread sleeps while nothing is in flight and polls while something is (MPI over
// TCP and shared memory only moves data inside MPI calls): it yields first, so that a
// compute thread waiting for the core gets it, then sleeps briefly, to keep a ring step's
// latency low without taking a core on a machine with few.
void Progress::loop() {
  int idle = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] {
        return stop_ || !incoming_.empty() || !incoming_chains_.empty() || !active_.empty() ||
               !chains_.empty();
      });
      if (stop_) return;
    }
    bool moved = false;
    try {
      if (try_poll(moved) && moved) {
        idle = 0;
        continue;
      }
    } catch (const std::exception& e) {
      // Per-operation failures are caught in poll(); anything else (out of memory) fails
      // everything in flight, so that every waiter wakes with the reason.
      fail_all(std::string("the communication thread failed: ") + e.what());
    }
    ++idle;
    if (idle < 64) std::this_thread::yield();
    else std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

template <class Done>
void Progress::block_until(Done done) {
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (done()) return;
    }
    bool moved = false;
    if (!try_poll(moved)) {
      // The thread is polling: wait for its word, briefly, then try to poll again.
      std::unique_lock<std::mutex> lock(mu_);
      done_cv_.wait_for(lock, std::chrono::microseconds(200), done);
      continue;
    }
    if (!moved) std::this_thread::yield();
  }
}

bool Progress::test(P2POp& op) {
  bool moved = false;
  if (!threaded()) try_poll(moved);
  std::lock_guard<std::mutex> lock(mu_);
  if (op.done && !op.error.empty()) throw Error(op.error);
  return op.done;
}

void Progress::wait(P2POp& op) {
  const double t0 = MPI_Wtime();
  block_until([&] { return op.done; });
  detail::count_exposed(*op.traffic, MPI_Wtime() - t0);
  std::lock_guard<std::mutex> lock(mu_);
  if (!op.error.empty()) throw Error(op.error);
}

namespace {
bool chain_over(const Chain& c) { return c.started2 && (c.second == nullptr || c.second->done); }
const std::string& chain_error(const Chain& c) {
  if (!c.error.empty() || c.second == nullptr) return c.error;
  return c.second->error;
}
}  // namespace

bool Progress::test(Chain& c) {
  bool moved = false;
  if (!threaded()) try_poll(moved);
  std::lock_guard<std::mutex> lock(mu_);
  if (!chain_over(c)) return false;
  if (!chain_error(c).empty()) throw Error(chain_error(c));
  return true;
}

// The time blocked is booked to the group each step ran on: first step 1's (until the
// second step has started), then step 2's.
void Progress::wait(Chain& c) {
  double t0 = MPI_Wtime();
  block_until([&] { return c.started2; });
  double t1 = MPI_Wtime();
  if (c.first) detail::count_exposed(*c.first->traffic, t1 - t0);
  block_until([&] { return chain_over(c); });
  if (c.second) detail::count_exposed(*c.second->traffic, MPI_Wtime() - t1);
  std::lock_guard<std::mutex> lock(mu_);
  if (!chain_error(c).empty()) throw Error(chain_error(c));
}

std::string Progress::describe(const Chain& c) {
  std::lock_guard<std::mutex> lock(mu_);
  const P2POp* op = c.started2 ? c.second.get() : c.first.get();
  const std::string step = c.started2 ? "step 2" : "step 1";
  if (op == nullptr) return c.what + " (" + step + ")";
  const int peer = op->waiting_for;
  return c.what + " (" + step + ": " + op->what +
         (peer >= 0 ? ", waiting for world rank " + std::to_string(peer) : std::string(", not started")) + ")";
}

std::string MpiOp::describe() const {
  const int peer = op_->waiting_for;
  if (peer >= 0) return op_->what + ", waiting for world rank " + std::to_string(peer);
  return op_->what + (op_->started ? "" : ", not started yet");
}

std::shared_ptr<P2POp> op_of(const Request& r) {
  const auto* op = dynamic_cast<const MpiOp*>(r.pending());
  return op != nullptr ? op->op() : nullptr;
}

bool Progress::poll() {
  bool moved = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    while (!incoming_.empty()) {
      active_.push_back(std::move(incoming_.front()));
      incoming_.pop_front();
      moved = true;
    }
    while (!incoming_chains_.empty()) {
      chains_.push_back(std::move(incoming_chains_.front()));
      incoming_chains_.pop_front();
    }
  }
  for (std::size_t i = 0; i < active_.size();) {
    P2POp& op = *active_[i];
    std::string error;
    bool over = false;
    try {
      moved = advance(op) || moved;
      over = op.next >= op.rounds.size() && op.requests.empty();
    } catch (const std::exception& e) {
      error = op.what + ": " + e.what();
      over = true;
    }
    if (!over) {
      ++i;
      continue;
    }
    finish(op, error);
    active_.erase(active_.begin() + static_cast<std::ptrdiff_t>(i));
    moved = true;
  }
  return advance_chains() || moved;
}

// Tests the round in flight; once it is complete, runs its reduction and posts the next
// one (rounds without messages run at once). Receives are posted before sends.
bool Progress::advance(P2POp& op) {
  bool moved = false;
  if (!op.requests.empty()) {
    int flag = 0;
    MICS_CHECK_MPI(MPI_Testall(static_cast<int>(op.requests.size()), op.requests.data(), &flag,
                               MPI_STATUSES_IGNORE));
    if (!flag) return false;
    op.requests.clear();
    if (op.rounds[op.next].after) op.rounds[op.next].after();
    ++op.next;
    moved = true;
  }
  op.started = true;
  while (op.next < op.rounds.size()) {
    const Round& r = op.rounds[op.next];
    int waits_on = -1;
    for (bool sends : {false, true})
      for (const Message& m : r.messages) {
        if (m.send != sends || m.bytes == 0) continue;
        MICS_ASSERT(m.bytes <= static_cast<std::size_t>(INT_MAX),
                    op.what + ": a message of " + std::to_string(m.bytes) +
                        " bytes exceeds MPI's int count limit; use smaller buckets");
        MPI_Request req = MPI_REQUEST_NULL;
        const int n = static_cast<int>(m.bytes);
        if (sends) {
          MICS_CHECK_MPI(MPI_Isend(m.buf, n, MPI_BYTE, m.peer, op.tag, op.comm, &req));
          detail::count_send(*op.traffic, m.bytes);
        } else {
          MICS_CHECK_MPI(MPI_Irecv(m.buf, n, MPI_BYTE, m.peer, op.tag, op.comm, &req));
          if (waits_on < 0) waits_on = op.world_of[static_cast<std::size_t>(m.peer)];
        }
        op.requests.push_back(req);
      }
    op.waiting_for = waits_on;
    if (!op.requests.empty()) return true;
    if (r.after) r.after();
    ++op.next;
    moved = true;
  }
  return moved;
}

void Progress::fail_all(const std::string& why) {
  std::lock_guard<std::mutex> pl(poll_mu_);
  for (auto& op : active_) finish(*op, op->what + ": " + why);
  active_.clear();
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& c : chains_) {
      c->error = c->what + ": " + why;
      c->started2 = true;
    }
  }
  chains_.clear();
  done_cv_.notify_all();
}

void Progress::finish(P2POp& op, const std::string& error) {
  // A failed operation leaves its requests behind: the job is about to end.
  op.waiting_for = -1;
  detail::end_busy(*op.traffic, MPI_Wtime());
  if (error.empty()) detail::count_call(*op.traffic, op.message);
  op.scratch.reset();
  {
    std::lock_guard<std::mutex> lock(mu_);
    op.done = true;
    op.error = error;
  }
  done_cv_.notify_all();
}

// Oldest first: a chain's second step starts only after every older chain's has, so
// every rank issues second steps (and takes their tags) in the same order.
bool Progress::advance_chains() {
  bool moved = false;
  while (!chains_.empty()) {
    Chain& c = *chains_.front();
    std::string error;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (c.first && !c.first->done) return moved;
      if (c.first) error = c.first->error;
    }
    std::shared_ptr<P2POp> second;
    if (error.empty()) {
      try {
        c.step2 = c.start2();  // queues the second step on this engine
        second = op_of(c.step2);
      } catch (const std::exception& e) {
        error = c.what + ": " + e.what();
      }
    }
    c.start2 = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      c.second = std::move(second);
      c.error = error;
      c.started2 = true;
    }
    done_cv_.notify_all();
    chains_.pop_front();
    moved = true;
  }
  return moved;
}

}  // namespace mics::comm::mpi
