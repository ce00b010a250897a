#pragma once
// The MPI backend's engine: collectives as rounds of point-to-point messages (ring
// schedules, see schedules.hpp), progressed by one thread per MpiCollectives while the
// caller computes. Private to lib/comm/mpi.
//
// Threading: with MPI_THREAD_MULTIPLE the progress thread is the only poller; a caller
// blocked in wait() sleeps on a condition variable until the thread reports completion.
// With a lower thread level there is no thread, and operations progress inside test()
// and wait() on the caller's thread (no overlap, still correct). Pollers nap when a poll
// moves nothing (progress.cpp, nap_after), so waiting costs little CPU.
// Locks: one mutex guards the queues and the completion flags; no MPI call is made while
// holding it, so a watchdog that ends the process never waits behind MPI.
#include <mpi.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../traffic.hpp"
#include "mics/comm/collectives.hpp"

namespace mics::comm::mpi {

// One message of a round: to or from `peer` (a rank of the operation's communicator).
struct Message {
  bool send = false;
  void* buf = nullptr;
  std::size_t bytes = 0;
  int peer = 0;
};

// Messages posted together; `after` runs once they have all completed (a reduction).
struct Round {
  std::vector<Message> messages;
  std::function<void()> after;
};

// A sequence of rounds on its own tag. An operation's lanes run side by side, each on a
// slice of every chunk, so that while one lane waits for its round to end (a reduction, a
// handshake, the poller's nap) another's bytes are on the wire: a pipeline in
// (lanes x rounds) steps instead of one lock-step ring.
struct Lane {
  std::vector<Round> rounds;
  int tag = 0;
  std::size_t next = 0;                    // the round in flight, or the next to post
  std::vector<MPI_Request> requests;       // the messages of round `next` in flight
  bool over() const { return next >= rounds.size() && requests.empty(); }
};

// One collective as the progress engine runs it.
struct P2POp {
  // Fixed at issue.
  std::string what;                        // "all_gather on group 'partition' (4 ranks)"
  const char* algorithm = "";              // "ring", "recursive_doubling", "chain"
  MPI_Comm comm = MPI_COMM_NULL;
  std::vector<int> world_of;               // world rank of each communicator rank
  std::shared_ptr<detail::Traffic> traffic;
  std::uint64_t message = 0;
  std::vector<Lane> lanes;
  std::vector<std::shared_ptr<void>> scratch;  // freed when the operation is
  // The progressing thread's state.
  std::atomic<int> waiting_for{-1};        // world rank this op waits on, -1: none
  std::atomic<bool> started{false};
  // Guarded by Progress::mu_.
  bool done = false;
  std::string error;
};

// A two-step collective whose second step the engine starts once the first completes,
// oldest first (so that every rank issues its second steps in the same order).
struct Chain {
  Request step1;
  std::shared_ptr<P2POp> first;            // null: step 1 had nothing to do
  std::function<Request()> start2;
  Request step2;
  std::shared_ptr<P2POp> second;
  std::shared_ptr<void> keep;
  std::string what;
  // Guarded by Progress::mu_. Complete once started2 and `second` (if any) is done.
  bool started2 = false;
  std::string error;
};

class Progress {
public:
  explicit Progress(bool threaded);
  ~Progress();  // stops and joins the thread (it never blocks in MPI, so this returns)
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  bool threaded() const noexcept { return thread_.joinable(); }
  void submit(const std::shared_ptr<P2POp>& op);
  void submit(const std::shared_ptr<Chain>& chain);
  bool test(P2POp& op);
  void wait(P2POp& op);
  bool test(Chain& chain);
  void wait(Chain& chain);
  std::string describe(const Chain& chain);

private:
  void loop();
  bool has_work() const;  // with mu_ held
  bool try_poll(bool& moved);  // false when another thread is polling
  bool poll();  // one pass over everything in flight; true when something moved
  bool advance(P2POp& op);
  bool advance(P2POp& op, Lane& lane);
  static void post(P2POp& op, Lane& lane, const Round& r);
  static int lane_waits_on(const P2POp& op, const Lane& lane);
  bool advance_chains();
  void finish(P2POp& op, const std::string& error);
  void fail_all(const std::string& why);
  template <class Done> void block_until(Done done);

  std::mutex mu_;
  std::mutex poll_mu_;  // held by whichever thread polls; mu_ may be taken inside it, never around it
  std::condition_variable work_cv_, done_cv_;
  std::deque<std::shared_ptr<P2POp>> incoming_;
  std::deque<std::shared_ptr<Chain>> incoming_chains_;
  bool stop_ = false;
  bool kick_ = false;  // something happened that deserves a poll now (ends the thread's nap)
  int waiters_ = 0;    // callers blocked in wait()
  // Only the thread holding poll_mu_ touches these.
  std::vector<std::shared_ptr<P2POp>> active_;
  std::deque<std::shared_ptr<Chain>> chains_;
  std::thread thread_;
};

// The Request side of a P2POp / Chain.
class MpiOp final : public detail::PendingOp {
public:
  MpiOp(Progress& progress, std::shared_ptr<P2POp> op) : progress_(progress), op_(std::move(op)) {}
  bool test() override { return progress_.test(*op_); }
  void wait() override { progress_.wait(*op_); }
  std::string describe() const override;
  const std::shared_ptr<P2POp>& op() const noexcept { return op_; }

private:
  Progress& progress_;
  std::shared_ptr<P2POp> op_;
};

class ChainOp final : public detail::PendingOp {
public:
  ChainOp(Progress& progress, std::shared_ptr<Chain> c) : progress_(progress), chain_(std::move(c)) {}
  bool test() override { return progress_.test(*chain_); }
  void wait() override { progress_.wait(*chain_); }
  std::string describe() const override { return progress_.describe(*chain_); }

private:
  Progress& progress_;
  std::shared_ptr<Chain> chain_;
};

// The engine's operation behind a Request of this backend (null when it is complete).
std::shared_ptr<P2POp> op_of(const Request& r);

}  // namespace mics::comm::mpi
