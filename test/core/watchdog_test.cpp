// The stall watchdog: a wait that outlives the timeout ends the process with one line
// naming what it waited for; waits that finish in time, or a timeout of 0, change nothing.
// Each case runs in a forked child, since the watchdog ends the process it watches.
#include <sys/wait.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <chrono>
#include <string>
#include <thread>

#include "mics/core/watchdog.hpp"

namespace {

struct Outcome {
  int status = -1;     // exit status, or -1 when killed by a signal
  std::string stderr_text;
  double seconds = 0;
};

template <class F>
Outcome in_child(F&& body) {
  int fd[2];
  BOOST_REQUIRE(::pipe(fd) == 0);
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  BOOST_REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(fd[1], 2);
    ::close(fd[0]);
    body();
    ::_exit(0);
  }
  ::close(fd[1]);
  Outcome o;
  char buf[512];
  ssize_t n;
  while ((n = ::read(fd[0], buf, sizeof buf)) > 0) o.stderr_text.append(buf, static_cast<std::size_t>(n));
  ::close(fd[0]);
  int st = 0;
  ::waitpid(pid, &st, 0);
  o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  o.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return o;
}

void sleep_s(double s) { std::this_thread::sleep_for(std::chrono::duration<double>(s)); }

}  // namespace

BOOST_AUTO_TEST_CASE(a_stalled_wait_ends_the_process_with_one_line) {
  const Outcome o = in_child([] {
    mics::watchdog::set_program("watchdog-test");
    mics::watchdog::set_timeout(0.5);
    const mics::watchdog::Scope scope("all_gather on group 'partition' (test)");
    sleep_s(20);
  });
  BOOST_CHECK_EQUAL(o.status, 1);
  BOOST_CHECK_LT(o.seconds, 15.0);  // far less than the 20 s wait; generous for a loaded machine
  BOOST_CHECK_MESSAGE(o.stderr_text.find("watchdog-test: error on rank -1 (host ") == 0, o.stderr_text);
  BOOST_CHECK(o.stderr_text.find(" s in all_gather on group 'partition' (test); a peer is stalled or gone "
                                 "(see --comm-timeout)\n") != std::string::npos);
  BOOST_CHECK(o.stderr_text.find("no progress for ") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(the_innermost_wait_is_named_and_described_lazily) {
  struct Ctx {
    std::string name = "reduce_scatter waiting for world rank 5";
  } ctx;
  const Outcome o = in_child([&] {
    mics::watchdog::set_timeout(0.3);
    const mics::watchdog::Scope outer("an outer wait");
    const mics::watchdog::Scope inner([](const void* c) { return static_cast<const Ctx*>(c)->name; }, &ctx);
    sleep_s(20);
  });
  BOOST_CHECK_EQUAL(o.status, 1);
  BOOST_CHECK_MESSAGE(o.stderr_text.find("in reduce_scatter waiting for world rank 5;") != std::string::npos,
                      o.stderr_text);
}

BOOST_AUTO_TEST_CASE(waits_in_time_and_a_zero_timeout_change_nothing) {
  const Outcome o = in_child([] {
    mics::watchdog::set_timeout(1.0);
    for (int i = 0; i < 5; ++i) {
      const mics::watchdog::Scope scope("a short wait");
      sleep_s(0.3);  // each scope closes well within the timeout
    }
    sleep_s(1.5);  // no scope open: nothing to time out
    mics::watchdog::set_timeout(0);
    const mics::watchdog::Scope off("a wait with the watchdog off");
    sleep_s(1.5);
  });
  BOOST_CHECK_EQUAL(o.status, 0);
  BOOST_CHECK_EQUAL(o.stderr_text, "");
}
