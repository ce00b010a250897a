#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "mics/core/error.hpp"
#include "mics/report/device_peak.hpp"
#include "mics/report/metrics_writer.hpp"
#include "mics/report/step_log.hpp"
#include "mics/report/summary.hpp"
#include "mics/report/timer.hpp"

using namespace mics::report;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("mics-report-test-" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& n) const { return (path / n).string(); }
};

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

StepRecord sample(std::int64_t step) {
  StepRecord r;
  r.step = step;
  r.loss = 5.54321;
  r.lr = 3e-4;
  r.grad_norm = 1.2345;
  r.step_ms = 123.45;
  r.tokens_per_s = 12345.6;
  r.tflops_per_rank = 0.0123;
  r.exposed_comm_ms = 1.25;
  r.comm = {{"partition", 10.5, 1.0, 4096}, {"replication", 2.0, 0.25, 1024}};
  return r;
}

const RunLayout kLayout{8, 2, 4, "mics", true, "two-hop"};

}  // namespace

BOOST_AUTO_TEST_CASE(step_line_has_every_field) {
  StepRecord r = sample(12);
  BOOST_CHECK_EQUAL(format_step_line(r, 100),
                    "step  12/100 | loss 5.5432 | lr 3.00e-04 | norm 1.234 | 123.5 ms | "
                    "12346 tok/s | 0.0123 TFLOPS/rank | exposed comm 1.2 ms");
  r.mfu = 0.4567;
  r.val_loss = 4.25;
  BOOST_CHECK_EQUAL(format_step_line(r, 0, 65.0),
                    "step 12 | loss 5.5432 | val 4.2500 | lr 3.00e-04 | norm 1.234 | 123.5 ms | "
                    "12346 tok/s | 0.0123 TFLOPS/rank | MFU 45.7% | exposed comm 1.2 ms | ETA 1 min 05 s");
  r.loss = std::numeric_limits<double>::quiet_NaN();
  BOOST_CHECK(format_step_line(r, 100).find("loss nan") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(durations) {
  // The README's form: "ETA 31 s".
  BOOST_CHECK_EQUAL(format_duration(0.4), "0 s");
  BOOST_CHECK_EQUAL(format_duration(31), "31 s");
  BOOST_CHECK_EQUAL(format_duration(59.4), "59 s");
  BOOST_CHECK_EQUAL(format_duration(65), "1 min 05 s");
  BOOST_CHECK_EQUAL(format_duration(3600 + 180 + 10), "1 h 03 min");
  BOOST_CHECK_EQUAL(format_duration(2 * 86400 + 5 * 3600), "2 d 05 h");
  BOOST_CHECK_EQUAL(format_duration(-1), "?");
}

BOOST_AUTO_TEST_CASE(eta_from_the_first_step_then_without_it) {
  EtaEstimator eta(101);
  const auto first = eta.update(5000.0);     // one step: that step's time, 100 left
  BOOST_REQUIRE(first);
  BOOST_CHECK_CLOSE(*first, 500.0, 1e-9);
  const auto e = eta.update(1000.0);         // mean of steps after the first: 1 s
  BOOST_REQUIRE(e);
  BOOST_CHECK_CLOSE(*e, 99.0, 1e-9);         // 99 steps left
  EtaEstimator short_run(10);
  BOOST_CHECK(short_run.update(100.0));      // short runs get one too (the README's 20 s job)
  EtaEstimator last(2);
  last.update(1.0);
  BOOST_CHECK(!last.update(1.0));            // nothing left
}

BOOST_AUTO_TEST_CASE(csv_header_rows_and_layout_columns) {
  TempDir dir;
  const auto csv = dir.file("m.csv");
  {
    MetricsWriter w(csv, kLayout, {"partition", "replication"});
    // The header is on disk before any row.
    BOOST_REQUIRE_EQUAL(lines_of(csv).size(), 1u);
    w.write(sample(1));
    // Flushed per row: readable while the writer lives (a killed run keeps it).
    BOOST_REQUIRE_EQUAL(lines_of(csv).size(), 2u);
    StepRecord r = sample(2);
    r.val_loss = 4.5;
    r.mfu = 0.25;
    r.skipped = true;
    w.write(r);
  }
  const auto l = lines_of(csv);
  BOOST_REQUIRE_EQUAL(l.size(), 3u);
  BOOST_CHECK_EQUAL(l[0],
                    "step,loss,val_loss,lr,grad_norm,step_ms,tokens_per_s,tflops_per_rank,mfu,"
                    "exposed_comm_ms,partition_comm_ms,partition_exposed_ms,partition_bytes,"
                    "replication_comm_ms,replication_exposed_ms,replication_bytes,"
                    "W,g,p,strategy,hierarchical,grad_sync,skipped");
  BOOST_CHECK_EQUAL(l[1], "1,5.54321,,0.0003,1.2345,123.45,12345.6,0.0123,,1.25,10.5,1,4096,2,0.25,1024,8,2,4,mics,true,two-hop,0");
  BOOST_CHECK_EQUAL(l[2], "2,5.54321,4.5,0.0003,1.2345,123.45,12345.6,0.0123,0.25,1.25,10.5,1,4096,2,0.25,1024,8,2,4,mics,true,two-hop,1");
  // Every row has as many cells as the header.
  auto cells = [](const std::string& s) { return std::count(s.begin(), s.end(), ',') + 1; };
  BOOST_CHECK_EQUAL(cells(l[1]), cells(l[0]));
  BOOST_CHECK_EQUAL(static_cast<std::size_t>(cells(l[0])), MetricsWriter::columns({"partition", "replication"}).size());
}

// A resumed run appends: no second header, earlier rows kept.
BOOST_AUTO_TEST_CASE(append_mode_continues_a_file) {
  TempDir dir;
  const auto csv = dir.file("a.csv");
  { MetricsWriter(csv, kLayout, {"partition", "replication"}).write(sample(1)); }
  { MetricsWriter(csv, kLayout, {"partition", "replication"}, "", true).write(sample(2)); }
  const auto l = lines_of(csv);
  BOOST_REQUIRE_EQUAL(l.size(), 3u);
  BOOST_CHECK_EQUAL(l[0].substr(0, 5), "step,");
  BOOST_CHECK_EQUAL(l[1].substr(0, 2), "1,");
  BOOST_CHECK_EQUAL(l[2].substr(0, 2), "2,");
  // Appending to a missing file writes the header first.
  const auto fresh = dir.file("b.csv");
  { MetricsWriter(fresh, kLayout, {"partition", "replication"}, "", true).write(sample(3)); }
  BOOST_CHECK_EQUAL(lines_of(fresh).size(), 2u);
}

BOOST_AUTO_TEST_CASE(loss_keeps_float_precision_and_nan) {
  TempDir dir;
  const auto csv = dir.file("p.csv");
  {
    MetricsWriter w(csv, RunLayout{1, 1, 1, "ddp", false, "two-hop"});
    StepRecord r;
    r.step = 1;
    r.loss = 2.718281828459045;
    w.write(r);
    r.step = 2;
    r.loss = std::numeric_limits<double>::quiet_NaN();
    w.write(r);
  }
  const auto l = lines_of(csv);
  BOOST_REQUIRE_EQUAL(l.size(), 3u);
  const double back = std::stod(l[1].substr(2, l[1].find(',', 2) - 2));
  BOOST_CHECK_EQUAL(static_cast<float>(back), static_cast<float>(2.718281828459045));
  BOOST_CHECK_EQUAL(l[2].substr(0, 6), "2,nan,");
  BOOST_CHECK(l[2].find(",ddp,false,two-hop") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(jsonl_twin_has_the_same_fields) {
  TempDir dir;
  const auto csv = dir.file("run.csv");
  const auto jsonl = default_jsonl_path(csv);
  BOOST_CHECK_EQUAL(jsonl, dir.file("run.jsonl"));
  BOOST_CHECK_EQUAL(default_jsonl_path("metrics"), "metrics.jsonl");
  {
    MetricsWriter w(csv, kLayout, {"partition", "replication"}, jsonl);
    w.write(sample(1));
    BOOST_REQUIRE_EQUAL(lines_of(jsonl).size(), 1u);
    StepRecord r = sample(2);
    r.grad_norm = std::numeric_limits<double>::infinity();
    r.mfu = 0.5;
    w.write(r);
  }
  const auto l = lines_of(jsonl);
  BOOST_REQUIRE_EQUAL(l.size(), 2u);
  BOOST_CHECK_EQUAL(l[0],
                    "{\"step\":1,\"loss\":5.54321,\"val_loss\":null,\"lr\":0.0003,\"grad_norm\":1.2345,"
                    "\"step_ms\":123.45,\"tokens_per_s\":12345.6,\"tflops_per_rank\":0.0123,\"mfu\":null,"
                    "\"exposed_comm_ms\":1.25,\"comm\":{\"partition\":{\"ms\":10.5,\"exposed_ms\":1,\"bytes\":4096},"
                    "\"replication\":{\"ms\":2,\"exposed_ms\":0.25,\"bytes\":1024}},"
                    "\"W\":8,\"g\":2,\"p\":4,\"strategy\":\"mics\",\"hierarchical\":true,\"grad_sync\":\"two-hop\","
                    "\"skipped\":false}");
  BOOST_CHECK(l[1].find("\"grad_norm\":null") != std::string::npos);
  BOOST_CHECK(l[1].find("\"mfu\":0.5") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(writer_errors) {
  TempDir dir;
  try {
    MetricsWriter w(dir.file("no/such/dir/m.csv"), kLayout);
    BOOST_FAIL("no error");
  } catch (const mics::UsageError& e) {
    BOOST_CHECK(std::string(e.what()).find("cannot write metrics file " + dir.file("no/such/dir/m.csv")) == 0);
  }
  MetricsWriter w(dir.file("g.csv"), kLayout, {"partition"});
  BOOST_CHECK_THROW(w.write(sample(1)), mics::Error);  // two groups where one is declared
  StepRecord r = sample(1);
  r.comm = {{"intra", 1, 1, 1}};
  BOOST_CHECK_THROW(w.write(r), mics::Error);          // wrong name
  BOOST_CHECK_THROW(MetricsWriter(dir.file("h.csv"), kLayout, {"a,b"}), mics::UsageError);
}

BOOST_AUTO_TEST_CASE(layout_text_with_comma_is_quoted) {
  TempDir dir;
  {
    MetricsWriter w(dir.file("q.csv"), RunLayout{1, 1, 1, "odd,name", false, "two-hop"});
    StepRecord r;
    r.step = 1;
    w.write(r);
  }
  BOOST_CHECK(lines_of(dir.file("q.csv"))[1].find(",\"odd,name\",false,two-hop") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(summary_means_totals_and_text) {
  SummaryAccumulator acc;
  for (int s = 1; s <= 3; ++s) {
    StepRecord r = sample(s);
    r.step_ms = s == 1 ? 1000.0 : 100.0 * s;   // warm-up step left out of the means
    r.tflops_per_rank = s == 1 ? 0.0 : 2.0 * s;
    r.mfu = 0.1 * s;
    r.loss = 6.0 - s;
    if (s == 2) r.val_loss = 4.5;
    acc.add(r);
  }
  RunSummary s = acc.summary();
  BOOST_CHECK_EQUAL(s.steps, 3);
  BOOST_CHECK_EQUAL(s.timed_steps, 2);
  BOOST_CHECK_CLOSE(s.mean_step_ms, 250.0, 1e-9);
  BOOST_CHECK_CLOSE(s.mean_tflops_per_rank, 5.0, 1e-9);
  BOOST_REQUIRE(s.mean_mfu);
  BOOST_CHECK_CLOSE(*s.mean_mfu, 0.25, 1e-9);
  BOOST_CHECK_EQUAL(*s.final_loss, 3.0);
  BOOST_CHECK_EQUAL(*s.final_val_loss, 4.5);
  BOOST_REQUIRE_EQUAL(s.groups.size(), 2u);
  BOOST_CHECK_EQUAL(s.groups[0].group, "partition");
  BOOST_CHECK_EQUAL(s.groups[0].bytes, 3u * 4096u);
  BOOST_CHECK_CLOSE(s.groups[1].exposed_ms, 0.75, 1e-9);
  s.groups[0].size = 4;
  s.model_state_bytes_per_rank = 3ull << 30;
  s.flops_formula = "72*B*s*l*h^2*(1 + s/(6h)) + 6*B*s*h*V (Narayanan et al. 2021)";
  const std::string text = format_summary(s);
  BOOST_TEST_INFO(text);
  BOOST_CHECK(text.find("mean TFLOPS per rank: 5 (MFU 25.0%)") != std::string::npos);
  BOOST_CHECK(text.find("model states per rank: 3.00 GiB") != std::string::npos);
  BOOST_CHECK(text.find("group partition (4 ranks): 12.0 KiB sent per rank (4.00 KiB/step)") != std::string::npos);
  BOOST_CHECK(text.find("group replication: 3.00 KiB") != std::string::npos);
  BOOST_CHECK(text.find("Narayanan") != std::string::npos);
  BOOST_CHECK(text.find("final val loss: 4.5000") != std::string::npos);
  // No MFU on some step: no mean MFU.
  SummaryAccumulator cpu;
  cpu.add(sample(1));
  BOOST_CHECK(!cpu.summary().mean_mfu);
  BOOST_CHECK(format_summary(cpu.summary()).find("device peak unknown") != std::string::npos);
  BOOST_CHECK_EQUAL(SummaryAccumulator().summary().steps, 0);
}

BOOST_AUTO_TEST_CASE(byte_units) {
  BOOST_CHECK_EQUAL(format_bytes(0), "0 B");
  BOOST_CHECK_EQUAL(format_bytes(1023), "1023 B");
  BOOST_CHECK_EQUAL(format_bytes(1536), "1.50 KiB");
  BOOST_CHECK_EQUAL(format_bytes(100ull << 20), "100 MiB");
  BOOST_CHECK_EQUAL(format_bytes(25ull << 30), "25.0 GiB");
}

BOOST_AUTO_TEST_CASE(device_peaks) {
  BOOST_CHECK_EQUAL(*device_peak_tflops("NVIDIA A100-SXM4-80GB"), 312.0);
  BOOST_CHECK_EQUAL(*device_peak_tflops("NVIDIA A100 80GB PCIe"), 312.0);
  BOOST_CHECK_EQUAL(*device_peak_tflops("NVIDIA H100 80GB HBM3"), 989.0);
  BOOST_CHECK_EQUAL(*device_peak_tflops("NVIDIA H100 PCIe"), 756.0);
  BOOST_CHECK_EQUAL(*device_peak_tflops("NVIDIA H100 NVL"), 835.0);
  BOOST_CHECK_EQUAL(*device_peak_tflops("NVIDIA H200"), 989.0);
  BOOST_CHECK_EQUAL(*device_peak_tflops("nvidia gh200 480gb"), 989.0);
  BOOST_CHECK_EQUAL(*device_peak_tflops("Tesla V100-SXM2-32GB"), 125.0);
  BOOST_CHECK(!device_peak_tflops("cpu"));
  BOOST_CHECK(!device_peak_tflops("NVIDIA GeForce RTX 4090"));
  BOOST_CHECK(!resolve_peak_tflops("cpu", std::nullopt));
  BOOST_CHECK_EQUAL(*resolve_peak_tflops("cpu", 1.5), 1.5);
  BOOST_CHECK_EQUAL(*resolve_peak_tflops("NVIDIA H100 80GB HBM3", 900.0), 900.0);
  BOOST_CHECK_THROW(resolve_peak_tflops("cpu", 0.0), mics::UsageError);
  BOOST_CHECK_THROW(resolve_peak_tflops("cpu", -3.0), mics::UsageError);
}

BOOST_AUTO_TEST_CASE(timers_measure_elapsed_time) {
  Timer t;
  Stopwatch w;
  w.stop();  // ignored
  w.start();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  w.stop();
  BOOST_CHECK_GE(t.elapsed_ms(), 19.0);
  BOOST_CHECK_GE(w.total_ms(), 19.0);
  const double before = w.total_ms();
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  BOOST_CHECK_EQUAL(w.total_ms(), before);  // stopped: no growth
  w.clear();
  BOOST_CHECK_EQUAL(w.total_ms(), 0.0);
}
