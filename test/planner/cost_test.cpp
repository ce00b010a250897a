// The cost model's formulas against their closed forms, its monotonicity, and the
// cluster files' parsing.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "mics/core/error.hpp"
#include "mics/planner/calibrate.hpp"
#include "mics/planner/cluster.hpp"
#include "mics/planner/collective_cost.hpp"
#include "mics/planner/deepspeed.hpp"
#include "mics/planner/memory.hpp"
#include "mics/planner/predict.hpp"

using namespace mics::planner;
namespace tt = boost::test_tools;

namespace {

Cluster gpu_cluster() {
  Cluster c;
  c.ranks_per_node = 8;
  c.memory_gib = 80;
  c.peak_tflops = 300;
  c.compute_efficiency = 0.5;
  c.memory_bandwidth_gbs = 2000;
  c.intra_bandwidth_gbs = 200;
  c.intra_latency_us = 5;
  c.inter_bandwidth_gbs = 40;
  c.inter_latency_us = 30;
  return c;
}

Cluster no_latency(Cluster c) {
  c.intra_latency_us = 0;
  c.inter_latency_us = 0;
  return c;
}

mics::model::ModelConfig gpt(std::int64_t layers, std::int64_t hidden) {
  mics::model::ModelConfig m;
  m.layers = layers;
  m.hidden = hidden;
  m.heads = 16;
  m.seq = 1024;
  m.vocab = 50304;
  return m;
}

std::string source_dir() { return std::filesystem::path(__FILE__).parent_path().string(); }

}  // namespace

BOOST_AUTO_TEST_CASE(a_group_of_one_costs_nothing) {
  const Cluster c = gpu_cluster();
  for (auto op : {Collective::all_gather, Collective::reduce_scatter, Collective::all_reduce})
    BOOST_TEST(collective_seconds(c, op, {1, 1, 8}, 1e9) == 0.0);
  BOOST_TEST(partition_gather_seconds(c, {1, 8, false}, 1e9) == 0.0);
  BOOST_TEST(partition_reduce_seconds(c, {1, 8, true}, 1e9) == 0.0);
  // ddp (p = 1) has no gather and no reduce-scatter in its prediction.
  Workload w;
  w.model = gpt(4, 1024);
  w.global_batch = 16;
  const Prediction p = predict(c, w, {Strategy::ddp, 16, 8, 1, false});
  BOOST_TEST(p.partition_comm_s == 0.0);
  BOOST_TEST(p.replication_comm_s > 0.0);
}

BOOST_AUTO_TEST_CASE(ring_collectives_match_the_alpha_beta_closed_form) {
  const Cluster c = gpu_cluster();
  const double M = 1e9, a = 5e-6, ai = 30e-6, B = 200e9, Bn = 40e9;
  // Inside a node: n-1 steps, (n-1)/n of the buffer through each rank's link.
  BOOST_TEST(collective_seconds(c, Collective::all_gather, {8, 8, 8}, M) == 7 * a + 7.0 / 8 * M / B, tt::tolerance(1e-12));
  BOOST_TEST(collective_seconds(c, Collective::all_reduce, {4, 4, 8}, M) == 6 * a + 1.5 * M / B, tt::tolerance(1e-12));
  // Across 4 nodes with 8 per node: the node link carries (n-1)/n M; of the 31 ring
  // steps only 3 cross nodes (NCCL's latency model), the other 28 ride NVLink.
  BOOST_TEST(collective_seconds(c, Collective::reduce_scatter, {32, 8, 8}, M) == 28 * a + 3 * ai + 31.0 / 32 * M / Bn,
             tt::tolerance(1e-12));
  // One member per node: 8 groups share each node's link.
  BOOST_TEST(collective_seconds(c, Collective::all_reduce, {4, 1, 8}, M) == 6 * ai + 1.5 * M * 8 / Bn,
             tt::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(ring_latency_is_nccls_launch_cost_plus_a_hop_per_step) {
  Cluster c = gpu_cluster();
  c.base_latency_us = 8;
  const double tiny = 1, a = 5e-6, ai = 30e-6, base = 8e-6;
  // 512 ranks on 64 nodes: 511 steps, 63 of them across nodes; an all-reduce 2 x 511
  // steps, 2 x 64 across nodes (NCCL counts the ring's wrap both ways).
  BOOST_TEST(collective_seconds(c, Collective::all_gather, {512, 8, 8}, tiny) == base + 448 * a + 63 * ai,
             tt::tolerance(1e-3));
  BOOST_TEST(collective_seconds(c, Collective::all_reduce, {512, 8, 8}, tiny) == base + 894 * a + 128 * ai,
             tt::tolerance(1e-3));
  // The latency term grows with the ring: 4x the ranks, about 4x the latency.
  const double t128 = collective_seconds(c, Collective::all_gather, {128, 8, 8}, tiny);
  const double t512 = collective_seconds(c, Collective::all_gather, {512, 8, 8}, tiny);
  BOOST_TEST(t512 / t128 > 3.5);
}

BOOST_AUTO_TEST_CASE(achieved_network_bandwidth_is_the_measured_share_falling_per_doubling) {
  Cluster c = no_latency(gpu_cluster());
  c.inter_efficiency = 0.6;
  c.inter_efficiency_nodes = 4;
  c.inter_efficiency_per_doubling = 0.8;
  BOOST_TEST(c.achieved_inter_gbs(4) == 40 * 0.6, tt::tolerance(1e-12));
  BOOST_TEST(c.achieved_inter_gbs(16) == 40 * 0.6 * 0.8 * 0.8, tt::tolerance(1e-12));
  BOOST_TEST(c.achieved_inter_gbs(1) == 40 * 0.6 / 0.8 / 0.8, tt::tolerance(1e-12));
  c.inter_efficiency_per_doubling = 0.1;  // never above the line rate
  BOOST_TEST(c.achieved_inter_gbs(1) == 40.0, tt::tolerance(1e-12));
  // A ring over 16 nodes: busbw = the achieved node bandwidth.
  c.inter_efficiency_per_doubling = 0.8;
  const double M = 1e9, t = collective_seconds(c, Collective::all_gather, {128, 8, 8}, M);
  BOOST_TEST(bus_factor(Collective::all_gather, 128) * M / t / 1e9 == c.achieved_inter_gbs(16), tt::tolerance(1e-9));
  // Inside a node nothing changes.
  BOOST_TEST(collective_seconds(c, Collective::all_gather, {8, 8, 8}, M) ==
                 collective_seconds(no_latency(gpu_cluster()), Collective::all_gather, {8, 8, 8}, M),
             tt::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(bus_bandwidth_is_the_bottleneck_link_as_nccl_tests_defines_it) {
  const Cluster c = no_latency(gpu_cluster());
  const double M = 1e9;
  for (int n : {2, 4, 8}) {
    BOOST_TEST(bus_factor(Collective::all_gather, n) == (n - 1.0) / n);
    BOOST_TEST(bus_factor(Collective::all_reduce, n) == 2.0 * (n - 1.0) / n);
    for (auto op : {Collective::all_gather, Collective::reduce_scatter, Collective::all_reduce}) {
      const double t = collective_seconds(c, op, {n, n, 8}, M);
      BOOST_TEST(bus_factor(op, n) * M / t / 1e9 == c.intra_bandwidth_gbs, tt::tolerance(1e-9));
    }
  }
  // A group spanning nodes with every rank of each node: busbw = the node link.
  const double t = collective_seconds(c, Collective::all_reduce, {64, 8, 8}, M);
  BOOST_TEST(bus_factor(Collective::all_reduce, 64) * M / t / 1e9 == c.inter_bandwidth_gbs, tt::tolerance(1e-9));
}

BOOST_AUTO_TEST_CASE(hierarchical_gathers_move_k_minus_1_over_k_across_nodes) {
  const double M = 64e6;
  for (Algorithms alg : {Algorithms::nccl, Algorithms::mpi}) {
    Cluster c = gpu_cluster();
    c.algorithms = alg;
    for (int k : {2, 4, 8}) {
      const int g = 8, p = k * g;
      const double flat = partition_gather_inter_bytes(c, {p, g, false}, M);
      const double hier = partition_gather_inter_bytes(c, {p, g, true}, M);
      BOOST_TEST_CONTEXT(algorithms_name(alg) << " k=" << k) {
        // nccl ring: (p-1)/p M per node flat; libnbc linear: g(p-g)/p M (each of the g
        // ranks sends its chunk to the p-g ranks elsewhere). Two-step: (k-1)/k M.
        const double expected_flat = alg == Algorithms::nccl ? (p - 1.0) / p * M : g * (p - g) / double(p) * M;
        BOOST_TEST(flat == expected_flat, tt::tolerance(1e-12));
        BOOST_TEST(hier == (k - 1.0) / k * M, tt::tolerance(1e-12));
        BOOST_TEST(hier < flat);
      }
    }
    // A group inside one node never touches the network, hierarchical or not.
    BOOST_TEST(partition_gather_inter_bytes(c, {8, 8, true}, M) == 0.0);
  }
  // Fewer sequential latency steps: (k-1) inter + (g-1) intra instead of p-1 inter.
  const Cluster c = gpu_cluster();
  const double tiny = 16;
  BOOST_TEST(partition_gather_seconds(c, {32, 8, true}, tiny) < partition_gather_seconds(c, {32, 8, false}, tiny));
}

BOOST_AUTO_TEST_CASE(more_bandwidth_or_less_latency_never_predicts_a_slower_step) {
  Workload w;
  w.model = gpt(8, 1024);
  w.global_batch = 64;
  w.micro_batch = 2;
  const int world = 32, g = 8;
  for (Algorithms alg : {Algorithms::nccl, Algorithms::rings, Algorithms::mpi})
    for (bool overlap : {true, false})
      for (const Layout& l : candidate_layouts(world, g)) {
        Cluster c = gpu_cluster();
        c.algorithms = alg;
        c.overlap = overlap;
        const double base = predict(c, w, l).step_s;
        for (double Cluster::*f : {&Cluster::intra_bandwidth_gbs, &Cluster::inter_bandwidth_gbs,
                                   &Cluster::peak_tflops, &Cluster::memory_bandwidth_gbs}) {
          Cluster faster = c;
          faster.*f *= 2;
          BOOST_TEST(predict(faster, w, l).step_s <= base * (1 + 1e-12));
        }
        for (double Cluster::*f : {&Cluster::intra_latency_us, &Cluster::inter_latency_us}) {
          Cluster slower = c;
          slower.*f *= 4;
          BOOST_TEST(predict(slower, w, l).step_s >= base * (1 - 1e-12));
        }
      }
}

BOOST_AUTO_TEST_CASE(a_step_is_at_least_its_compute_and_exposure_at_most_the_traffic) {
  Workload w;
  w.model = gpt(6, 768);
  w.global_batch = 128;
  for (const Layout& l : candidate_layouts(64, 8)) {
    const Prediction p = predict(gpu_cluster(), w, l);
    BOOST_TEST(p.step_s >= p.compute_s);
    BOOST_TEST(p.partition_exposed_s <= p.partition_comm_s * (1 + 1e-12));
    BOOST_TEST(p.replication_exposed_s <= p.replication_comm_s * (1 + 1e-12));
    BOOST_TEST(p.accumulation == 2);
  }
  // Without overlap every collective is exposed.
  Cluster c = gpu_cluster();
  c.overlap = false;
  const Prediction p = predict(c, w, {Strategy::zero3, 64, 8, 64, false});
  BOOST_TEST(p.partition_exposed_s == p.partition_comm_s, tt::tolerance(1e-9));
  BOOST_TEST(p.step_s == p.compute_s + p.partition_comm_s + p.replication_comm_s + p.optimizer_s, tt::tolerance(1e-9));
}

BOOST_AUTO_TEST_CASE(model_states_are_16_bytes_per_parameter_over_p_plus_the_compute_copies) {
  // Every bucket a multiple of 16 x p elements: no padding, so the closed forms hold.
  mics::model::ModelConfig m;
  m.layers = 2;
  m.hidden = 64;
  m.heads = 4;
  m.seq = 64;
  m.vocab = 192;
  const double n = bucket_sizes(m).parameters();
  BOOST_TEST(n == static_cast<double>(192 * 64 + 64 * 64 + 2 * (12 * 64 * 64 + 13 * 64) + 2 * 64));
  MemoryInputs mixed;  // bf16 compute, f32 states
  const int p = 2;
  BOOST_TEST(rank_memory(m, Strategy::mics, p, 1, false, mixed).states == 18.0 * n / p);
  BOOST_TEST(rank_memory(m, Strategy::zero3, p, 1, false, mixed).states == 18.0 * n / p);
  BOOST_TEST(rank_memory(m, Strategy::zero2, p, 1, false, mixed).states == 18.0 * n / p + 2.0 * n);
  BOOST_TEST(rank_memory(m, Strategy::ddp, 1, 1, false, mixed).states == 20.0 * n);
  MemoryInputs f32;
  f32.compute_bytes = 4;
  BOOST_TEST(rank_memory(m, Strategy::mics, p, 1, false, f32).states == 16.0 * n / p);
  // Hierarchical reduce-scatters add their k-chunk temporaries.
  BOOST_TEST(rank_memory(m, Strategy::mics, p, 2, true, f32).working > rank_memory(m, Strategy::mics, p, 2, false, f32).working);
}

BOOST_AUTO_TEST_CASE(cluster_presets_load_and_bad_files_are_one_line) {
  const std::string root = source_dir() + "/../../inputs/clusters/";
  for (const char* f : {"p3dn.24xlarge", "p4d.24xlarge", "p4de.24xlarge", "p5.48xlarge", "emulated",
                        "emulated-p4d-achieved-200mbit", "emulated-p4d-achieved-1gbit"}) {
    const Cluster c = load_cluster(root + f + ".cfg");
    BOOST_TEST(c.name == f);
    BOOST_TEST(c.peak_tflops > 0);
  }
  const auto message = [](const std::string& path) {
    try {
      load_cluster(path);
    } catch (const mics::UsageError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  BOOST_TEST(message(source_dir() + "/bad/unknown-key.cfg").find("unknown key 'inter_bandwith_gbs'") != std::string::npos);
  BOOST_TEST(message(source_dir() + "/bad/negative.cfg").find("inter_bandwidth_gbs = -5; it must be positive") !=
             std::string::npos);
  BOOST_TEST(message("/nonexistent.cfg").find("no such file") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_written_cluster_reads_back_the_same) {
  Cluster c = gpu_cluster();
  c.name = "round-trip";
  c.algorithms = Algorithms::rings;
  c.overlap = false;
  c.base_latency_us = 7;
  c.inter_efficiency = 0.5;
  c.inter_efficiency_nodes = 4;
  c.inter_efficiency_per_doubling = 0.9;
  const auto path = std::filesystem::temp_directory_path() / "mics-planner-round-trip.cfg";
  {
    std::ofstream f(path);
    write_cluster(f, c, "a comment\non two lines");
  }
  const Cluster d = load_cluster(path.string());
  std::filesystem::remove(path);
  BOOST_TEST(d.name == c.name);
  BOOST_TEST(d.algorithms == c.algorithms);
  BOOST_TEST(d.overlap == c.overlap);
  BOOST_TEST(d.inter_bandwidth_gbs == c.inter_bandwidth_gbs);
  BOOST_TEST(d.intra_latency_us == c.intra_latency_us);
  BOOST_TEST(d.base_latency_us == c.base_latency_us);
  BOOST_TEST(d.inter_efficiency == c.inter_efficiency);
  BOOST_TEST(d.inter_efficiency_nodes == c.inter_efficiency_nodes);
  BOOST_TEST(d.inter_efficiency_per_doubling == c.inter_efficiency_per_doubling);
}

BOOST_AUTO_TEST_CASE(calibration_recovers_the_links_that_made_the_timings) {
  // Timings generated by a known cluster: the fit must find it again.
  Cluster truth = gpu_cluster();
  truth.ranks_per_node = 2;
  std::vector<BenchRow> rows;
  for (const char* op : {"all_gather", "reduce_scatter", "all_reduce"})
    for (int p : {2, 4})  // a partition group inside a node, and one spanning two
      for (const char* group : {"partition", "world"})
        for (double bytes : {4e3, 64e3, 1e6, 16e6}) {
          BenchRow r{"synthetic", op, group, "flat", group[0] == 'w' ? 8 : p, 8, p, bytes, 0};
          r.seconds = predict_bench(truth, 2, r);
          rows.push_back(r);
        }
  Cluster start = truth;
  start.intra_bandwidth_gbs = 10;
  start.inter_bandwidth_gbs = 1;
  start.intra_latency_us = 1;
  start.inter_latency_us = 1;
  const Calibration fit = calibrate(start, rows, {}, Workload{});
  BOOST_TEST(fit.cluster.intra_bandwidth_gbs == truth.intra_bandwidth_gbs, tt::tolerance(0.02));
  BOOST_TEST(fit.cluster.inter_bandwidth_gbs == truth.inter_bandwidth_gbs, tt::tolerance(0.02));
  BOOST_TEST(fit.cluster.intra_latency_us == truth.intra_latency_us, tt::tolerance(0.05));
  BOOST_TEST(fit.cluster.inter_latency_us == truth.inter_latency_us, tt::tolerance(0.05));
  for (const auto& r : fit.bench) BOOST_TEST(std::fabs(r.error()) < 0.02);
}

namespace {

// DeepSpeed 0.5.6's ZeRO-3 gathers (each tensor by itself, fp16) and reduce-scatters
// (after flattening W slices) over 16 ranks on 2 nodes of gpu_cluster().
struct DsCosts {
  Cluster c = gpu_cluster();
  GroupShape world{16, 8, 8};
  double ag(double n) const { return collective_seconds(c, Collective::all_gather, world, shard_padded(n, 16) * 2); }
  // The bucket's division by W (read and write), the flattening copies, the collective.
  double rs(double n) const {
    const double divide = 2.0 * n * 2 / (c.memory_bandwidth_gbs * 1e9);
    const double flatten = 16 * std::max(kDsCopyLaunch, 2.0 * n * 2 / 16 / (c.memory_bandwidth_gbs * 1e9));
    return divide + flatten + collective_seconds(c, Collective::reduce_scatter, world, shard_padded(n, 16) * 2);
  }
  // One reduce-scatter per tensor: 12 per block, ln_f's two, the embeddings' two.
  double reductions(double layers, double h, double wte, double wpe) const {
    double s = 2 * rs(h) + rs(wte) + rs(wpe);
    for (double n : {h, h, 3 * h * h, 3 * h, h * h, h, h, h, 4 * h * h, 4 * h, 4 * h * h, h}) s += layers * rs(n);
    return s;
  }
  // The tensors under the 1e5-element persistence threshold: per block both norms' two,
  // the four biases; ln_f's two.
  double persistent(double layers, double h) const {
    return layers * (6 * ag(h) + ag(3 * h) + ag(4 * h)) + 2 * ag(h);
  }
  Prediction predict(const mics::model::ModelConfig& m, Strategy s = Strategy::zero3, int accumulation = 1) const {
    Workload w;
    w.model = m;
    w.global_batch = 16 * accumulation;
    w.recompute = true;
    w.baseline = Baseline::deepspeed_0_5_6;
    return mics::planner::predict(c, w, {s, 16, 8, 16, false});
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(deepspeed_baseline_moves_each_tensor_by_itself) {
  // gpt(2, 512): every weight matrix and both embeddings are above the 1e5-element
  // persistence threshold, every bias and norm below it. The whole micro-step's trace is
  // under stage3_max_reuse_distance (1e9 elements), so each sub-module keeps its tensors
  // until it last runs: the forward gathers each once; the tied head's last run (its
  // backward) releases the embedding's matrix, which the embedding's backward gathers again.
  // After the optimizer step the persistent tensors are gathered again, one by one.
  const DsCosts d;
  const double h = 512, wte = 50304 * h, wpe = 1024 * h;
  double expected = d.ag(wte) + d.ag(wpe) + d.ag(wte) + d.reductions(2, h, wte, wpe) + d.persistent(2, h);
  for (int b = 0; b < 2; ++b) expected += d.ag(3 * h * h) + d.ag(h * h) + 2 * d.ag(4 * h * h);
  const Prediction p = d.predict(gpt(2, 512));
  BOOST_TEST(p.baseline == Baseline::deepspeed_0_5_6);
  BOOST_TEST(p.partition_comm_s == expected, tt::tolerance(1e-9));
  BOOST_TEST(p.step_s >= p.compute_s + p.optimizer_s);
  BOOST_TEST(p.partition_exposed_s <= p.partition_comm_s * (1 + 1e-12));
}

BOOST_AUTO_TEST_CASE(deepspeed_zero3_regathers_what_is_beyond_the_reuse_distance) {
  // gpt(2, 10240): from a block's recomputed forward to its backward, fc_2 is 0 elements
  // away and fc_1 8 h^2 + 2 h (under 1e9: kept), the attention output 16 h^2 + ... and qkv
  // 18 h^2 + ... (over 1e9: released and gathered again). Nothing survives from the
  // forward to the recomputation (the head's 2 x 50304 h lie between), so each block is
  // gathered 12 h^2 (forward) + 12 h^2 (recomputation) + 4 h^2 (backward); the embedding's
  // matrix three times (forward, the head, the embedding's backward), the positions twice.
  const DsCosts d;
  const double h = 10240, wte = 50304 * h, wpe = 1024 * h;
  double expected = 3 * d.ag(wte) + 2 * d.ag(wpe) + d.reductions(2, h, wte, wpe) + d.persistent(2, h);
  for (int b = 0; b < 2; ++b) expected += 2 * (d.ag(3 * h * h) + d.ag(h * h) + 2 * d.ag(4 * h * h)) + d.ag(3 * h * h) + d.ag(h * h);
  const Prediction p = d.predict(gpt(2, 10240));
  BOOST_TEST(p.partition_comm_s == expected, tt::tolerance(1e-9));
}

BOOST_AUTO_TEST_CASE(deepspeed_zero3_regathers_persistent_tensors_after_the_first_micro_step) {
  // Two micro-steps: the first finds the persistent tensors that _post_step gathered; the
  // backward releases every tensor, so the second gathers each persistent one once more;
  // then _post_step again. Everything else repeats: twice the one-micro-step figure.
  const DsCosts d;
  const double h = 512, wte = 50304 * h, wpe = 1024 * h;
  double one = 2 * d.ag(wte) + d.ag(wpe) + d.reductions(2, h, wte, wpe);
  for (int b = 0; b < 2; ++b) one += d.ag(3 * h * h) + d.ag(h * h) + 2 * d.ag(4 * h * h);
  const Prediction p = d.predict(gpt(2, 512), Strategy::zero3, 2);
  BOOST_TEST(p.partition_comm_s == 2 * one + 2 * d.persistent(2, h), tt::tolerance(1e-9));
}

BOOST_AUTO_TEST_CASE(deepspeed_zero3_memory_passes_on_the_compute_stream) {
  // fp16 at 2000 GB/s. ZeRO-3's compute stream, beyond ZeRO-2's:
  //  - param.norm() at every run of a sub-module, a read of its own parameters: per
  //    micro-step the forward, the recomputation and the backward of each block
  //    (12 h^2 + 13 h elements), the embedding's two tensors twice, ln_f twice (not the
  //    tied head, whose matrix is the embedding's);
  //  - torch.zeros over each prefetched tensor, a write: the embedding's fetch gathers its
  //    two tensors itself, then prefetches every block matrix (24 h^2, under the 5e7
  //    bucket); the embedding's backward finds its matrix prefetched after the head's
  //    backward released it.
  // Both copy every gradient into the bucket (the same reads and writes); ZeRO-2 also
  // divides each bucket on the compute stream, ZeRO-3 on its reduction stream.
  const DsCosts d;
  const double h = 512, L = 2, wte = 50304 * h, wpe = 1024 * h;
  const double norms = 3 * L * (12 * h * h + 13 * h) + 2 * (wte + wpe) + 4 * h;
  const double fills = 24 * h * h + wte;
  const double divides = 2 * (wte + wpe + L * (12 * h * h + 13 * h) + 2 * h);
  const Prediction z3 = d.predict(gpt(2, 512)), z2 = d.predict(gpt(2, 512), Strategy::zero2);
  BOOST_TEST(z3.compute_s - z2.compute_s == (norms + fills - divides) * 2 / 2000e9, tt::tolerance(1e-6));
}

BOOST_AUTO_TEST_CASE(deepspeed_copies_each_gradient_into_its_bucket_unless_it_is_larger) {
  // ZeRO-2's compute stream per micro-step beyond its compute: every gradient copied into
  // the bucket (read and write) and divided in place (read and write); a tensor over the
  // 5e8-element bucket is divided but not copied. gpt(1, 10240): the embedding's matrix,
  // 50304 x 10240 = 5.15e8 elements, is the only one over it.
  const DsCosts d;
  const double h = 10240, wte = 50304 * h, wpe = 1024 * h, block = 12 * h * h + 13 * h;
  const double copied = wpe + block + 2 * h, all = copied + wte;
  const Prediction z2 = d.predict(gpt(1, 10240), Strategy::zero2);
  Cluster fast = d.c;
  fast.memory_bandwidth_gbs = 0;  // no memory-bound terms at all
  Workload w;
  w.model = gpt(1, 10240);
  w.global_batch = 16;
  w.recompute = true;
  w.baseline = Baseline::deepspeed_0_5_6;
  const Prediction none = predict(fast, w, {Strategy::zero2, 16, 8, 16, false});
  BOOST_TEST(z2.compute_s - none.compute_s == (2 * copied + 2 * all) * 2 / 2000e9, tt::tolerance(1e-6));
}

BOOST_AUTO_TEST_CASE(deepspeed_reduce_scatter_flattening_is_launch_or_memory_bound) {
  // W copy kernels: short slices cost their launches, long ones their bytes read and
  // written at memory bandwidth (2000 GB/s in gpu_cluster()).
  const Cluster c = gpu_cluster();
  BOOST_TEST(ds_flatten_seconds(c, 512, 1e6) == 512 * kDsCopyLaunch, tt::tolerance(1e-12));
  BOOST_TEST(ds_flatten_seconds(c, 16, 8e9) == 2 * 8e9 / 2000e9, tt::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(deepspeed_baseline_touches_only_zero_layouts_and_hides_no_zero2_reduce) {
  Workload w;
  w.model = gpt(8, 1024);
  w.global_batch = 64;
  w.micro_batch = 2;
  Workload ds = w;
  ds.baseline = Baseline::deepspeed_0_5_6;
  for (const Layout& l : candidate_layouts(32, 8)) {
    const Prediction a = predict(gpu_cluster(), w, l), b = predict(gpu_cluster(), ds, l);
    const bool zero = l.strategy == Strategy::zero2 || l.strategy == Strategy::zero3;
    BOOST_TEST_CONTEXT(strategy_name(l.strategy) << " p=" << l.p) {
      BOOST_TEST((b.baseline == Baseline::deepspeed_0_5_6) == zero);
      if (!zero) BOOST_TEST(a.step_s == b.step_s);
      if (l.strategy == Strategy::zero2) BOOST_TEST(b.partition_exposed_s == b.partition_comm_s, tt::tolerance(1e-9));
    }
  }
}

BOOST_AUTO_TEST_CASE(deepspeed_zero3_scales_worse_than_mics_on_the_p4d_preset) {
  // Weak scaling 16 -> 64 nodes at a fixed batch per GPU: the per-tensor rings over all
  // ranks pay latency and achieved bandwidth that fall with the ring; MiCS p = 128 keeps
  // its rings and loses only the replication all-reduce.
  const Cluster c = load_cluster(source_dir() + "/../../inputs/clusters/p4d.24xlarge.cfg");
  mics::model::ModelConfig m = gpt(80, 10240);
  m.seq = 2048;
  m.heads = 80;
  const auto per_gpu = [&](Strategy s, int p, int nodes) {
    Workload w;
    w.model = m;
    w.micro_batch = 2;
    w.recompute = true;
    w.global_batch = 8LL * nodes * 8;
    w.baseline = Baseline::deepspeed_0_5_6;
    return predict(c, w, {s, nodes * 8, 8, p == 0 ? nodes * 8 : p, p != 0}).tokens_per_s / (nodes * 8);
  };
  const double zero3 = per_gpu(Strategy::zero3, 0, 64) / per_gpu(Strategy::zero3, 0, 16);
  const double mics = per_gpu(Strategy::mics, 128, 64) / per_gpu(Strategy::mics, 128, 16);
  BOOST_TEST(zero3 < 0.9);
  BOOST_TEST(mics > 0.97);
}

BOOST_AUTO_TEST_CASE(cpu_rings_reduce_small_buffers_on_2m_ranks_by_recursive_doubling) {
  Cluster c = gpu_cluster();
  c.algorithms = Algorithms::rings;
  c.base_latency_us = 8;
  const double a = 5e-6, ai = 30e-6, base = 8e-6, B = 200e9, Bn = 40e9;
  // 8 ranks, 2 on each of 4 nodes (4 such groups share a node's link): one round inside
  // the node, two across it, each moving the whole 16 KiB; every rank of the node sends.
  const double M = 16 * 1024;
  BOOST_TEST(collective_seconds(c, Collective::all_reduce, {8, 2, 8}, M) ==
                 base + (a + M / B) + 2 * (ai + M * 8 / Bn),
             tt::tolerance(1e-12));
  BOOST_TEST(inter_node_bytes(c, Collective::all_reduce, {8, 2, 8}, M) == 2 * M * 8, tt::tolerance(1e-12));
  // The other collectives: the rings, as with NCCL; the all-reduce: the same ring where
  // the group has one member per node or lies in one node, the two-level ring (next
  // test) where it has several members on each of several nodes.
  Cluster nccl = c;
  nccl.algorithms = Algorithms::nccl;
  for (const GroupShape g : {GroupShape{8, 2, 8}, GroupShape{6, 2, 2}, GroupShape{4, 1, 8}, GroupShape{4, 4, 8}})
    for (double bytes : {16.0 * 1024, 64.0 * 1024})
      for (auto op : {Collective::all_gather, Collective::reduce_scatter, Collective::all_reduce}) {
        const bool pow2 = (g.size & (g.size - 1)) == 0;
        if (op == Collective::all_reduce && ((g.per_node > 1 && g.nodes() > 1) || (pow2 && bytes <= 32 * 1024)))
          continue;
        BOOST_TEST(collective_seconds(c, op, g, bytes) == collective_seconds(nccl, op, g, bytes), tt::tolerance(1e-12));
      }
}

BOOST_AUTO_TEST_CASE(cpu_all_reduce_over_nodes_of_several_members_is_two_level) {
  Cluster c = gpu_cluster();
  c.algorithms = Algorithms::rings;
  c.base_latency_us = 8;
  const double a = 5e-6, ai = 30e-6, base = 8e-6, B = 200e9, Bn = 40e9, M = 1e9;
  // 8 ranks, 2 on each of 4 nodes, 4 such groups per node: one launch; a 2-rank ring
  // reduce-scatter and all-gather inside the node (one step each, M/2 per rank); a 4-rank
  // ring all-reduce of M/2 across the nodes, whose node link the 8 ranks of the node
  // share: 2(N-1)/N of M per group.
  BOOST_TEST(collective_seconds(c, Collective::all_reduce, {8, 2, 8}, M) ==
                 base + 2 * (a + 0.5 * M / B) + 6 * ai + 1.5 * (M / 2) * 8 / Bn,
             tt::tolerance(1e-12));
  // Per node link: 2(N-1)/N M for each of the 4 groups, where the flat ring would put
  // 2(n-1)/n M.
  BOOST_TEST(inter_node_bytes(c, Collective::all_reduce, {8, 2, 8}, M) == 4 * 1.5 * M, tt::tolerance(1e-12));
  Cluster nccl = c;
  nccl.algorithms = Algorithms::nccl;
  BOOST_TEST(inter_node_bytes(nccl, Collective::all_reduce, {8, 2, 8}, M) == 4 * 1.75 * M, tt::tolerance(1e-12));
  // ddp on 2 nodes of 2 (the 4-rank comparison): 2(N-1)/N = 1 M per node link, not 1.5 M.
  BOOST_TEST(inter_node_bytes(c, Collective::all_reduce, replication_shape(4, 2, 1), M) == M, tt::tolerance(1e-12));
  // mics with p = 2 < g = 4 on 2 nodes: the replication group has 2 members per node.
  const GroupShape rep = replication_shape(8, 4, 2);
  BOOST_TEST(rep.per_node == 2);
  BOOST_TEST(inter_node_bytes(c, Collective::all_reduce, rep, M) == 2 * 1.0 * M, tt::tolerance(1e-12));
  // Small messages on 2^m ranks stay recursive doubling.
  BOOST_TEST(collective_seconds(c, Collective::all_reduce, {8, 2, 8}, 16 * 1024) ==
                 base + (a + 16 * 1024 / B) + 2 * (ai + 16 * 1024 * 8 / Bn),
             tt::tolerance(1e-12));
  // mics-train --hierarchical-all-reduce false: the flat ring's volume and cost again.
  Cluster flat = c;
  flat.two_level_all_reduce = false;
  BOOST_TEST(inter_node_bytes(flat, Collective::all_reduce, {8, 2, 8}, M) == 4 * 1.75 * M, tt::tolerance(1e-12));
  BOOST_TEST(collective_seconds(flat, Collective::all_reduce, {8, 2, 8}, M) ==
                 collective_seconds(nccl, Collective::all_reduce, {8, 2, 8}, M),
             tt::tolerance(1e-12));
}

namespace {

// ddp on 2 nodes of 8: no partition collectives, hop 2 over all 16 ranks, 8 layers,
// 2 micro-steps of 16 sequences.
struct Hop2Case {
  Cluster c;
  Workload w;
  Layout l{Strategy::ddp, 16, 8, 1, false};
  double block = 0, emb = 0, norm = 0;  // each bucket kind's hop-2 seconds
  explicit Hop2Case(double inter_gbs) {
    c = no_latency(gpu_cluster());
    c.inter_bandwidth_gbs = inter_gbs;
    w.model = gpt(8, 1024);
    w.micro_batch = 16;
    w.global_batch = 16 * 16 * 2;
    const BucketSizes b = bucket_sizes(w.model);
    const GroupShape rep = replication_shape(16, 8, 1);
    const auto sync = [&](double n) { return collective_seconds(c, Collective::all_reduce, rep, shard_chunk(n, 1) * 4); };
    block = sync(b.block);
    emb = sync(b.embeddings);
    norm = sync(b.final_norm);
  }
  double total() const { return emb + 8 * block + norm; }
  double bwd_block() const { return compute_split(c, w, l).bwd_block; }
};

}  // namespace

BOOST_AUTO_TEST_CASE(hop_2_overlaps_the_last_backward_by_the_engines_slot_rule) {
  // Slot rule: the embeddings hold one of the four gradient slots through the backward,
  // so a block's reduce-scatter (and with it its hop 2) is finished when the third block
  // after it starts; ln_f's after two blocks; the last three blocks' and the embeddings'
  // after the backward. L = 8: ln_f at 2 blocks, blocks 8..4 at 3..7 blocks, the rest at 8.
  {  // Hop 2 slower than a block's backward: the queue runs from the first block's start.
    const Hop2Case k(0.01);
    BOOST_TEST(k.block > k.bwd_block());
    BOOST_TEST(k.norm < k.bwd_block());  // ln_f's is done before block 8's starts
    const Prediction on = predict(k.c, k.w, k.l);
    BOOST_TEST(on.replication_comm_s == k.total(), tt::tolerance(1e-9));
    BOOST_TEST(on.replication_exposed_s == 8 * k.block + k.emb - 5 * k.bwd_block(), tt::tolerance(1e-9));
    Workload off = k.w;
    off.overlap_grad_sync = false;
    const Prediction all = predict(k.c, off, k.l);
    BOOST_TEST(all.replication_exposed_s == k.total(), tt::tolerance(1e-9));
    BOOST_TEST(all.step_s - on.step_s == all.replication_exposed_s - on.replication_exposed_s, tt::tolerance(1e-9));
  }
  {  // Hop 2 faster than a block's backward: only what starts after the backward shows.
    const Hop2Case k(4000);
    BOOST_TEST(k.block < k.bwd_block());
    const Prediction on = predict(k.c, k.w, k.l);
    BOOST_TEST(on.replication_exposed_s == 3 * k.block + k.emb, tt::tolerance(1e-9));
  }
  {  // A cluster whose collectives progress only when waited for cannot overlap.
    Hop2Case k(0.01);
    k.c.overlap = false;
    BOOST_TEST(predict(k.c, k.w, k.l).replication_exposed_s == k.total(), tt::tolerance(1e-9));
  }
}

BOOST_AUTO_TEST_CASE(hop_2_moves_the_reduce_type_when_it_is_narrower_than_the_accumulator) {
  Hop2Case k(0.01);
  for (bool two_hop : {true, false}) {
    Workload w = k.w;
    w.two_hop = two_hop;
    const double f32 = predict(k.c, w, k.l).replication_comm_s;
    w.reduce_bytes = 2;
    BOOST_TEST(predict(k.c, w, k.l).replication_comm_s == f32 / 2, tt::tolerance(1e-9));
  }
  BOOST_TEST(predict(k.c, k.w, k.l).replication_comm_s == k.total(), tt::tolerance(1e-9));
}

BOOST_AUTO_TEST_CASE(overlapping_hop_2_never_predicts_a_slower_step) {
  Workload w;
  w.model = gpt(8, 1024);
  w.micro_batch = 2;
  w.reduce_bytes = 2;
  for (Algorithms alg : {Algorithms::nccl, Algorithms::rings})
    for (int accumulation : {1, 2, 5})
      for (const Layout& l : candidate_layouts(32, 8)) {
        Cluster c = gpu_cluster();
        c.algorithms = alg;
        c.inter_bandwidth_gbs = 1;  // communication-bound: the overlap matters
        w.global_batch = 32 * 2 * accumulation;
        Workload off = w;
        off.overlap_grad_sync = false;
        const Prediction a = predict(c, w, l), b = predict(c, off, l);
        BOOST_TEST(a.step_s <= b.step_s * (1 + 1e-12));
        BOOST_TEST(a.replication_exposed_s <= b.replication_exposed_s * (1 + 1e-12));
        BOOST_TEST(a.replication_comm_s == b.replication_comm_s, tt::tolerance(1e-12));
        if (l.world / l.p > 1 && l.p < l.world) BOOST_TEST(a.replication_exposed_s < b.replication_exposed_s);
      }
}
