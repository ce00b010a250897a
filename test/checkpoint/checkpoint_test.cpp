// Save with one sharded layout, load into others, and every way a checkpoint can be bad.
// Runs at several world sizes; within a run, partition sizes 1..W are emulated by giving
// each rank the shard index rank % p and making ranks < p the writers.
#include <hdf5.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "mics/checkpoint/checkpoint.hpp"
#include "mics/core/error.hpp"
#include "mpi_test_util.hpp"
#include "synthetic.hpp"

namespace fs = std::filesystem;
namespace ck = mics::checkpoint;
using mics::test::world_rank;
using mics::test::world_size;

namespace {

// A scratch directory shared by all ranks, removed at the end.
struct ScratchDir {
  std::string path;
  ScratchDir() {
    char buf[256] = {0};
    if (world_rank() == 0) {
      std::snprintf(buf, sizeof buf, "%s/mics-ckpt-test-XXXXXX", fs::temp_directory_path().c_str());
      if (!mkdtemp(buf)) buf[0] = 0;
    }
    MPI_Bcast(buf, sizeof buf, MPI_CHAR, 0, MPI_COMM_WORLD);
    path = buf;
  }
  ~ScratchDir() {
    MPI_Barrier(MPI_COMM_WORLD);
    if (world_rank() == 0) fs::remove_all(path);
  }
};

std::unique_ptr<mics::test::OwnedState> state_for(const mics::model::BucketLayout& l, int p, std::size_t align,
                                                  bool fill) {
  const int r = world_rank();
  return mics::test::make_state(l, p, r % p, r < p, align, fill);
}

std::size_t global_wrong(const mics::model::BucketLayout& l, const mics::test::OwnedState& o) {
  unsigned long long w = mics::test::count_wrong(l, o), all = 0;
  MPI_Allreduce(&w, &all, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
  return all;
}

// Runs f on rank 0 only, then synchronises (for file surgery between collective calls).
template <class F>
void on_rank0(F&& f) {
  if (world_rank() == 0) f();
  MPI_Barrier(MPI_COMM_WORLD);
}

// The message every rank got from a collective call that must fail; "" if it did not.
template <class F>
std::string failure_of(F&& f) {
  try {
    f();
  } catch (const mics::AgreedError& e) {
    BOOST_CHECK(e.world());
    return e.what();
  }
  return "";
}

void expect_failure(const std::string& msg, const std::string& file, const std::string& fault) {
  BOOST_TEST_MESSAGE("failure message: " << msg);
  BOOST_TEST_CONTEXT("message: " << msg) {
    BOOST_CHECK(!msg.empty());
    BOOST_CHECK(msg.find(file) != std::string::npos);
    BOOST_CHECK(msg.find(fault) != std::string::npos);
    BOOST_CHECK(msg.find('\n') == std::string::npos);
  }
}

std::string save_synthetic(const std::string& dir, std::int64_t step, int p = 0, int keep_last = 0,
                           const mics::model::BucketLayout* layout = nullptr) {
  static const auto def = mics::test::synthetic_layout();
  const auto& l = layout ? *layout : def;
  auto s = state_for(l, p > 0 ? p : world_size(), 16, true);
  return ck::save(dir, s->st, mics::test::synthetic_meta(step), keep_last);
}

std::uint64_t dataset_file_offset(const std::string& file, const std::string& path) {
  const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  const hid_t d = H5Dopen2(f, path.c_str(), H5P_DEFAULT);
  const haddr_t off = H5Dget_offset(d);
  H5Dclose(d);
  H5Fclose(f);
  return off;
}

void flip_byte(const std::string& file, std::uint64_t offset) {
  std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
  io.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  io.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  io.seekp(static_cast<std::streamoff>(offset));
  io.write(&c, 1);
}

std::set<std::string> names_in(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(checksum_does_not_depend_on_the_split) {
  std::vector<float> x(1000);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = mics::test::synthetic_value(0, "x", i);
  const auto whole = ck::checksum_terms(x.data(), x.size(), 0);
  const auto parts = ck::checksum_terms(x.data(), 333, 0) + ck::checksum_terms(x.data() + 333, 667, 333);
  BOOST_CHECK_EQUAL(whole, parts);
  std::swap(x[10], x[11]);  // the same values in another order
  BOOST_CHECK_NE(whole, ck::checksum_terms(x.data(), x.size(), 0));
}

BOOST_AUTO_TEST_CASE(every_layout_reads_what_every_layout_wrote) {
  ScratchDir tmp;
  const auto layout = mics::test::synthetic_layout();
  const int W = world_size();
  std::set<int> write_ps = {1, 2 <= W ? 2 : 1, W};
  for (std::size_t walign : {16u, 1u})
    for (int pw : write_ps) {
      const std::string dir = tmp.path + "/w" + std::to_string(pw) + "a" + std::to_string(walign);
      auto ws = state_for(layout, pw, walign, true);
      ws->st.two_phase_io = walign == 16;  // both MPI-IO modes, crossed with the readers'
      const auto meta = mics::test::synthetic_meta(7);
      const std::string file = ck::save(dir, ws->st, meta, 0);
      BOOST_CHECK_EQUAL(file, dir + "/step_00000007.h5");
      for (std::size_t ralign : {16u, 1u})
        for (int pr = 1; pr <= W; ++pr) {
          BOOST_TEST_CONTEXT("written p=" << pw << " align " << walign << ", read p=" << pr << " align " << ralign) {
            auto rs = state_for(layout, pr, ralign, false);
            rs->st.two_phase_io = pr % 2 == 1;
            const ck::Metadata got = ck::load(dir, rs->st);
            BOOST_CHECK_EQUAL(global_wrong(layout, *rs), 0u);
            BOOST_CHECK_EQUAL(got.step, 7);
          }
        }
    }
}

BOOST_AUTO_TEST_CASE(metadata_round_trips) {
  ScratchDir tmp;
  const std::string file = save_synthetic(tmp.path, 42);
  const auto layout = mics::test::synthetic_layout();
  auto rs = state_for(layout, 1, 16, false);
  const ck::Metadata got = ck::load(file, rs->st);
  const ck::Metadata want = mics::test::synthetic_meta(42);
  BOOST_CHECK_EQUAL(got.format_version, ck::kFormatVersion);
  BOOST_CHECK_EQUAL(got.step, want.step);
  BOOST_CHECK_EQUAL(got.tokens_seen, want.tokens_seen);
  BOOST_CHECK(got.schedule == want.schedule);
  BOOST_CHECK(got.rng_state == want.rng_state);
  BOOST_CHECK(got.data_position == want.data_position);
  BOOST_CHECK_EQUAL(got.model_config, want.model_config);
  BOOST_CHECK_EQUAL(got.training_config, want.training_config);
  BOOST_CHECK_EQUAL(got.layout.world_size, want.layout.world_size);
  BOOST_CHECK_EQUAL(got.layout.ranks_per_node, want.layout.ranks_per_node);
  BOOST_CHECK_EQUAL(got.layout.partition_size, want.layout.partition_size);
  BOOST_CHECK_EQUAL(got.layout.strategy, want.layout.strategy);
  BOOST_CHECK_EQUAL(got.layout.hierarchical, want.layout.hierarchical);
  BOOST_CHECK(got.strings == want.strings);
  BOOST_CHECK(got.ints == want.ints);

  const ck::Info inf = ck::info(MPI_COMM_WORLD, file);
  BOOST_CHECK_EQUAL(inf.tensors.size(), 9u);
  BOOST_CHECK_EQUAL(inf.tensors[2].name, "h0.attn.w");
  BOOST_CHECK(inf.tensors[2].shape == (std::vector<std::int64_t>{8, 3, 4}));
  BOOST_CHECK(inf.tensors[4].shape.empty());
  const ck::VerifyReport rep = ck::verify(MPI_COMM_WORLD, file, &layout);
  BOOST_CHECK(rep.faults.empty());
  BOOST_CHECK_EQUAL(rep.datasets_checked, 27u);
}

BOOST_AUTO_TEST_CASE(latest_keep_last_and_no_overwrite) {
  ScratchDir tmp;
  const std::string d = tmp.path + "/run";
  for (int step = 1; step <= 5; ++step) save_synthetic(d, step, 0, 3);
  BOOST_CHECK(names_in(d) == (std::set<std::string>{"latest", "step_00000003.h5", "step_00000004.h5",
                                                    "step_00000005.h5"}));
  BOOST_CHECK_EQUAL(ck::resolve(MPI_COMM_WORLD, d), d + "/step_00000005.h5");
  BOOST_CHECK_EQUAL(ck::resolve(MPI_COMM_WORLD, "latest", d), d + "/step_00000005.h5");
  BOOST_CHECK_EQUAL(ck::resolve(MPI_COMM_WORLD, d + "/latest"), d + "/step_00000005.h5");

  const auto before = fs::last_write_time(d + "/step_00000004.h5");
  expect_failure(failure_of([&] { save_synthetic(d, 4, 0, 3); }), d + "/step_00000004.h5", "refusing to overwrite");
  BOOST_CHECK(fs::last_write_time(d + "/step_00000004.h5") == before);

  // A resumed run that goes back in steps: its new checkpoint is kept and becomes latest.
  save_synthetic(d, 2, 0, 3);
  BOOST_CHECK(names_in(d) == (std::set<std::string>{"latest", "step_00000002.h5", "step_00000004.h5",
                                                    "step_00000005.h5"}));
  BOOST_CHECK_EQUAL(ck::resolve(MPI_COMM_WORLD, d), d + "/step_00000002.h5");

  // Without `latest` the highest step wins; temporaries never count.
  on_rank0([&] {
    fs::remove(d + "/latest");
    std::ofstream(d + "/step_00000009.h5.tmp") << "half-written";
  });
  BOOST_CHECK_EQUAL(ck::resolve(MPI_COMM_WORLD, d), d + "/step_00000005.h5");
  expect_failure(failure_of([&] { ck::resolve(MPI_COMM_WORLD, "latest"); }), "latest", "checkpoint directory");
}

BOOST_AUTO_TEST_CASE(bad_files_fail_cleanly_on_every_rank) {
  ScratchDir tmp;
  const auto layout = mics::test::synthetic_layout();
  const std::string good = save_synthetic(tmp.path + "/good", 3);
  auto copy_of = [&](const std::string& name) {
    const std::string p = tmp.path + "/" + name;
    on_rank0([&] { fs::copy_file(good, p); });
    return p;
  };
  auto load_msg = [&](const std::string& path, const mics::model::BucketLayout& l = mics::test::synthetic_layout()) {
    auto s = state_for(l, world_size(), 16, false);
    return failure_of([&] { ck::load(path, s->st); });
  };

  const std::string not_h5 = tmp.path + "/notes.h5";
  on_rank0([&] { std::ofstream(not_h5) << "this is not HDF5\n"; });
  expect_failure(load_msg(not_h5), not_h5, "not an HDF5 file");

  const std::string empty_dir = tmp.path + "/empty";
  on_rank0([&] { fs::create_directories(empty_dir); });
  expect_failure(load_msg(empty_dir), empty_dir, "no checkpoints");
  expect_failure(load_msg(tmp.path + "/nowhere"), tmp.path + "/nowhere", "no such file");

  const std::string truncated = copy_of("truncated.h5");
  on_rank0([&] { fs::resize_file(truncated, fs::file_size(truncated) / 2); });
  expect_failure(load_msg(truncated), truncated, "truncated file");

  const std::string stub = copy_of("stub.h5");
  on_rank0([&] { fs::resize_file(stub, 100); });
  expect_failure(load_msg(stub), stub, "truncated file: 100 bytes on disk");

  const std::string flipped = copy_of("flipped.h5");
  on_rank0([&] { flip_byte(flipped, dataset_file_offset(flipped, "/optimizer/adam_v/h1.mlp.w") + 401); });
  expect_failure(load_msg(flipped), flipped, "checksum mismatch in /optimizer/adam_v/h1.mlp.w");
  {
    const ck::VerifyReport rep = ck::verify(MPI_COMM_WORLD, flipped);
    BOOST_REQUIRE_EQUAL(rep.faults.size(), 1u);
    BOOST_CHECK(rep.faults[0].find("/optimizer/adam_v/h1.mlp.w: checksum mismatch") == 0);
  }

  const std::string header = copy_of("header.h5");
  on_rank0([&] { flip_byte(header, 20); });  // inside the superblock, which is checksummed
  expect_failure(load_msg(header), header, "");

  const std::string missing = copy_of("missing.h5");
  on_rank0([&] {
    const hid_t f = H5Fopen(missing.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "/model/h0.attn.b", H5P_DEFAULT);
    H5Fclose(f);
  });
  expect_failure(load_msg(missing), missing, "missing dataset /model/h0.attn.b");

  auto reshaped = layout;
  reshaped.buckets[1].tensors[0].shape = {8, 4, 3};
  expect_failure(load_msg(good, reshaped), good, "tensor 'h0.attn.w' has shape [8, 3, 4] in the checkpoint but [8, 4, 3] in the model");
  auto fewer = layout;
  fewer.buckets[3].tensors.pop_back();
  fewer.buckets[3].count -= 8;
  expect_failure(load_msg(good, fewer), good, "the checkpoint holds 9 tensors, the model 8");
  auto renamed = layout;
  renamed.buckets[3].tensors[1].name = "ln_f.beta";
  expect_failure(load_msg(good, renamed), good, "tensor 'ln_f.beta' is missing from the checkpoint");

  // Nothing was created by any failed load.
  BOOST_CHECK(names_in(tmp.path + "/good") == (std::set<std::string>{"latest", "step_00000003.h5"}));
}

BOOST_AUTO_TEST_CASE(bad_states_are_refused_before_anything_is_written) {
  ScratchDir tmp;
  const auto layout = mics::test::synthetic_layout();
  const std::string d = tmp.path + "/never";
  {
    auto s = state_for(layout, world_size(), 16, true);
    s->st.buckets[1].adam_m = s->st.buckets[1].adam_m.subspan(1);
    expect_failure(failure_of([&] { ck::save(d, s->st, mics::test::synthetic_meta(1), 0); }), "bucket 'h0'",
                   "shard (p=");
  }
  if (world_size() > 1) {
    auto s = mics::test::make_state(layout, 1, 0, true, 16, true);  // every replica claims to write
    expect_failure(failure_of([&] { ck::save(d, s->st, mics::test::synthetic_meta(1), 0); }), "writer",
                   "exactly one replica");
  }
  BOOST_CHECK(!fs::exists(d) || fs::is_empty(d));
}

// The engine's hierarchical ordering gives ranks shard indices that are not rank % p, and
// any replica may be the writer: files must not care.
BOOST_AUTO_TEST_CASE(permuted_shard_indices_and_other_writer_replicas) {
  ScratchDir tmp;
  const auto layout = mics::test::synthetic_layout();
  const int W = world_size(), r = world_rank();
  auto permuted = [&](int p, bool fill) {
    return mics::test::make_state(layout, p, p - 1 - r % p, r + p >= W, 16, fill);
  };
  for (int p = 1; p <= W; ++p) {
    BOOST_TEST_CONTEXT("p=" << p) {
      const std::string d = tmp.path + "/perm" + std::to_string(p);
      auto ws = permuted(p, true);
      ck::save(d, ws->st, mics::test::synthetic_meta(p), 0);
      auto plain = state_for(layout, W, 16, false);
      ck::load(d, plain->st);
      BOOST_CHECK_EQUAL(global_wrong(layout, *plain), 0u);
      auto back = permuted(p, false);
      ck::load(d, back->st);
      BOOST_CHECK_EQUAL(global_wrong(layout, *back), 0u);
    }
  }
}

BOOST_AUTO_TEST_CASE(altered_attributes_are_detected) {
  ScratchDir tmp;
  const std::string file = save_synthetic(tmp.path, 5);
  on_rank0([&] {
    const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    const hid_t a = H5Aopen(f, "step", H5P_DEFAULT);
    const long long step = 6;
    H5Awrite(a, H5T_NATIVE_LLONG, &step);
    H5Aclose(a);
    H5Fclose(f);
  });
  const auto layout = mics::test::synthetic_layout();
  auto s = state_for(layout, 1, 16, false);
  expect_failure(failure_of([&] { ck::load(file, s->st); }), file, "metadata checksum mismatch");
}

// A write that fails on one rank only (here: the last, through the library's test seam)
// must fail the save on every rank with that rank's message, leave no file behind, and
// not hang.
BOOST_AUTO_TEST_CASE(a_failure_on_one_rank_fails_the_save_everywhere) {
  ScratchDir tmp;
  const std::string d = tmp.path + "/onefails";
  const bool fails = world_rank() == world_size() - 1;
  ck::set_save_hook_for_tests([fails](const std::string& point, const std::string& path) {
    if (fails && point == "dataset-written") throw std::runtime_error("injected write failure in " + path);
  });
  const std::string msg = failure_of([&] { save_synthetic(d, 8); });
  ck::set_save_hook_for_tests(nullptr);
  expect_failure(msg, d + "/step_00000008.h5.tmp", "injected write failure in /model/wte");
  BOOST_CHECK(names_in(d).empty());
  // The directory is still usable.
  save_synthetic(d, 8);
  BOOST_CHECK(names_in(d) == (std::set<std::string>{"latest", "step_00000008.h5"}));
}

// ---- reliability (issue 11) -------------------------------------------------------------

namespace {
std::string save_as_run(const std::string& dir, std::int64_t step, const std::string& run, int keep_last,
                        std::vector<std::string>* removed = nullptr) {
  static const auto l = mics::test::synthetic_layout();
  auto s = state_for(l, world_size(), 16, true);
  auto meta = mics::test::synthetic_meta(step);
  meta.strings["run_id"] = run;
  return ck::save(dir, s->st, meta, keep_last, removed);
}
}  // namespace

// --keep-last prunes only the files of the run that saves; another run's checkpoints and
// stray files named like checkpoints stay; `latest` names the run on its second line.
BOOST_AUTO_TEST_CASE(keep_last_removes_only_this_runs_files) {
  ScratchDir tmp;
  const std::string d = tmp.path + "/shared";
  for (int step = 1; step <= 2; ++step) save_as_run(d, step, "other", 0);
  on_rank0([&] { std::ofstream(d + "/step_00000050.h5") << "not a checkpoint"; });
  std::vector<std::string> removed;
  for (int step = 3; step <= 6; ++step) save_as_run(d, step, "mine", 2, &removed);
  BOOST_CHECK(names_in(d) == (std::set<std::string>{"latest", "step_00000001.h5", "step_00000002.h5",
                                                    "step_00000005.h5", "step_00000006.h5", "step_00000050.h5"}));
  if (world_rank() == 0)
    BOOST_CHECK(removed == (std::vector<std::string>{d + "/step_00000003.h5", d + "/step_00000004.h5"}));
  const auto folder = ck::list_folder(d);
  std::map<std::int64_t, std::string> owner;
  for (const auto& e : folder.checkpoints) owner[e.step] = e.run_id;
  BOOST_CHECK_EQUAL(owner[1], "other");
  BOOST_CHECK_EQUAL(owner[6], "mine");
  BOOST_CHECK_EQUAL(owner[50], "");
  std::ifstream latest(d + "/latest");
  std::string first, second;
  std::getline(latest, first);
  std::getline(latest, second);
  BOOST_CHECK_EQUAL(first, "step_00000006.h5");
  BOOST_CHECK_EQUAL(second, "run_id mine");
}

// A state holding NaN or Inf is never written: every rank fails alike, nothing is left.
BOOST_AUTO_TEST_CASE(a_non_finite_state_is_not_saved) {
  ScratchDir tmp;
  const std::string d = tmp.path + "/nan";
  save_synthetic(d, 1);
  static const auto l = mics::test::synthetic_layout();
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    auto s = state_for(l, world_size(), 16, true);
    // The last writer rank's first adam_v element of its slice of bucket h1.
    const int poisoned = std::min(world_size(), s->st.partition_size) - 1;
    if (world_rank() == poisoned) s->st.buckets[2].adam_v[0] = bad;
    const std::string msg = failure_of([&] { ck::save(d, s->st, mics::test::synthetic_meta(2), 0); });
    expect_failure(msg, "refusing to save step 2", "non-finite value");
    BOOST_CHECK(names_in(d) == (std::set<std::string>{"latest", "step_00000001.h5"}));
  }
}

// verify reports a tensor with NaN as a fault even when its checksum matches.
BOOST_AUTO_TEST_CASE(verify_reports_non_finite_tensors) {
  ScratchDir tmp;
  const std::string file = save_synthetic(tmp.path + "/v", 3);
  on_rank0([&] {
    const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    const hid_t ds = H5Dopen2(f, "/model/wpe", H5P_DEFAULT);
    std::vector<float> x(40);
    H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x.data());
    x[7] = std::numeric_limits<float>::quiet_NaN();
    H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x.data());
    const std::uint64_t sum = ck::checksum_terms(x.data(), x.size(), 0);
    const hid_t a = H5Aopen(ds, "checksum", H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_UINT64, &sum);
    H5Aclose(a);
    H5Dclose(ds);
    H5Fclose(f);
  });
  const auto rep = ck::verify(MPI_COMM_WORLD, file);
  BOOST_REQUIRE_EQUAL(rep.faults.size(), 1u);
  BOOST_CHECK_EQUAL(rep.faults[0], "/model/wpe: 1 of 40 values are not finite (NaN or Inf)");
}
