#include "progress.hpp"

#include <sys/prctl.h>

#include <algorithm>
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
    kick_ = true;
  }
  work_cv_.notify_one();
}

void Progress::submit(const std::shared_ptr<Chain>& chain) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    incoming_chains_.push_back(chain);
    kick_ = true;
  }
  work_cv_.notify_one();
}

// Whoever holds poll_mu_ polls: the thread when there is one, else the caller; fail_all
// takes it too, so that nothing advances an operation while it is being failed.
bool Progress::try_poll(bool& moved) {
  std::unique_lock<std::mutex> pl(poll_mu_, std::try_to_lock);
  if (!pl.owns_lock()) return false;
  moved = poll();
  return true;
}

// How long a poller naps when a poll moved nothing: a quarter of the time since anything
// last moved, within [kMinNap, kMaxNap]. A round that takes T is then noticed at most
// T/4 late, after about log(T/kMinNap)/log(1.25) polls, so that sixteen ranks waiting
// on slow links poll a few hundred times a second each instead of spinning: on a machine
// with fewer cores than ranks, spinning pollers take the cores from the ranks and the
// network stack that would finish the transfer (docs/DESIGN.md section 9).
namespace {
using Clock = std::chrono::steady_clock;
constexpr auto kMinNap = std::chrono::microseconds(20);
constexpr auto kMaxNap = std::chrono::microseconds(1000);
constexpr auto kMaxNapAwaited = std::chrono::microseconds(200);

// While a caller waits (compute stalled), a late poll costs step time, so naps stay short.
Clock::duration nap_after(Clock::duration idle, bool awaited) {
  return std::clamp<Clock::duration>(idle / 4, kMinNap, awaited ? kMaxNapAwaited : kMaxNap);
}

// Naps of tens of microseconds are only honoured with a small timer slack (default 50 us).
void tighten_timer_slack() { prctl(PR_SET_TIMERSLACK, 5000UL, 0UL, 0UL, 0UL); }
}  // namespace

// The thread sleeps on work_cv_ while nothing is in flight. While something is, it polls
// at once again after a poll that moved something, and otherwise naps (nap_after); a new
// operation or a caller starting to wait ends the nap (kick_), since both are moments
// when a poll is likely to move something.
void Progress::loop() {
  tighten_timer_slack();
  auto last_move = Clock::now();
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stop_ || has_work(); });
      if (stop_) return;
    }
    bool moved = false;
    try {
      try_poll(moved);
    } catch (const std::exception& e) {
      // Per-operation failures are caught in poll(); anything else (out of memory) fails
      // everything in flight, so that every waiter wakes with the reason.
      fail_all(std::string("the communication thread failed: ") + e.what());
    }
    if (moved) {
      last_move = Clock::now();
      continue;
    }
    std::unique_lock<std::mutex> lock(mu_);
    if (!kick_)
      work_cv_.wait_for(lock, nap_after(Clock::now() - last_move, waiters_ > 0), [&] { return stop_ || kick_; });
    if (kick_) last_move = Clock::now();
    kick_ = false;
  }
}

bool Progress::has_work() const {
  return !incoming_.empty() || !incoming_chains_.empty() || !active_.empty() || !chains_.empty();
}

// With the thread, a waiter only sleeps until the thread reports a completion (one poller,
// no second thread spinning beside it). Without it, the caller polls and naps itself.
template <class Done>
void Progress::block_until(Done done) {
  if (threaded()) {
    std::unique_lock<std::mutex> lock(mu_);
    if (done()) return;
    kick_ = true;
    ++waiters_;
    work_cv_.notify_one();
    done_cv_.wait(lock, done);
    --waiters_;
    return;
  }
  auto last_move = Clock::now();
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (done()) return;
    }
    bool moved = false;
    try_poll(moved);
    if (moved) last_move = Clock::now();
    else std::this_thread::sleep_for(nap_after(Clock::now() - last_move, true));
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
      over = std::all_of(op.lanes.begin(), op.lanes.end(), [](const Lane& l) { return l.over(); });
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

bool Progress::advance(P2POp& op) {
  bool moved = false;
  int waits_on = -1;
  for (Lane& lane : op.lanes) {
    moved = advance(op, lane) || moved;
    if (waits_on < 0 && !lane.requests.empty()) waits_on = lane_waits_on(op, lane);
  }
  op.started = true;
  op.waiting_for = waits_on;
  return moved;
}

// Tests the lane's round in flight; once it is complete, runs its reduction and posts the
// next one (rounds without messages run at once). Receives are posted before sends.
bool Progress::advance(P2POp& op, Lane& lane) {
  bool moved = false;
  if (!lane.requests.empty()) {
    int flag = 0;
    MICS_CHECK_MPI(MPI_Testall(static_cast<int>(lane.requests.size()), lane.requests.data(), &flag,
                               MPI_STATUSES_IGNORE));
    if (!flag) return false;
    lane.requests.clear();
    if (lane.rounds[lane.next].after) lane.rounds[lane.next].after();
    ++lane.next;
    moved = true;
  }
  while (lane.next < lane.rounds.size()) {
    post(op, lane, lane.rounds[lane.next]);
    if (!lane.requests.empty()) return true;
    if (lane.rounds[lane.next].after) lane.rounds[lane.next].after();
    ++lane.next;
    moved = true;
  }
  return moved;
}

void Progress::post(P2POp& op, Lane& lane, const Round& r) {
  for (bool sends : {false, true})
    for (const Message& m : r.messages) {
      if (m.send != sends || m.bytes == 0) continue;
      MICS_ASSERT(m.bytes <= static_cast<std::size_t>(INT_MAX),
                  op.what + ": a message of " + std::to_string(m.bytes) +
                      " bytes exceeds MPI's int count limit; use smaller buckets");
      MPI_Request req = MPI_REQUEST_NULL;
      const int n = static_cast<int>(m.bytes);
      if (sends) {
        MICS_CHECK_MPI(MPI_Isend(m.buf, n, MPI_BYTE, m.peer, lane.tag, op.comm, &req));
        detail::count_send(*op.traffic, m.bytes);
      } else {
        MICS_CHECK_MPI(MPI_Irecv(m.buf, n, MPI_BYTE, m.peer, lane.tag, op.comm, &req));
      }
      lane.requests.push_back(req);
    }
}

// The peer of the round's first receive: what the watchdog names when the lane stalls.
int Progress::lane_waits_on(const P2POp& op, const Lane& lane) {
  for (const Message& m : lane.rounds[lane.next].messages)
    if (!m.send && m.bytes > 0) return op.world_of[static_cast<std::size_t>(m.peer)];
  return -1;
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
  op.scratch.clear();
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
