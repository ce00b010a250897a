// mics-bench: times all-gather, reduce-scatter and all-reduce over the groups of one MiCS
// layout (partition group flat and hierarchical, replication group, world), in the manner
// of nccl-tests: a sweep of message sizes, every result checked element by element
// (#wrong), algbw and busbw per line (docs/DESIGN.md section 7), the algorithm each line
// ran, and at the end the traffic counters of each group (bytes handed to MPI, counted at
// every send) next to the ring-volume predictions.
#include <boost/program_options.hpp>
#include <cinttypes>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "mics/comm/mpi_collectives.hpp"
#include "mics/comm/process_groups.hpp"
#include "mics/core/agree.hpp"
#include "mics/core/error.hpp"
#include "mics/core/mpi_env.hpp"
#include "mics/core/version.hpp"

namespace po = boost::program_options;
using mics::UsageError;
using mics::comm::DType;
using mics::comm::Group;
using mics::comm::GroupCounters;
using mics::comm::MpiCollectives;
using mics::comm::ProcessGroups;

namespace {

struct Options {
  std::uint64_t min_bytes = 1024, max_bytes = 4u << 20;
  int factor = 4, iters = 20, warmup = 5;
  int ranks_per_node = 0, partition_size = 0;
  bool hierarchical = false;
  bool flat_all_reduce = false;
  DType dtype = DType::f32;
  std::string csv;
  std::vector<std::string> ops{"all_gather", "reduce_scatter", "all_reduce"};
  std::vector<std::string> groups{"partition", "replication", "world"};
};

// "a,b,c" -> {"a", "b", "c"}; every item must be one of `allowed`, each at most once.
std::vector<std::string> parse_list(const std::string& text, const char* option,
                                    const std::vector<std::string>& allowed) {
  std::vector<std::string> out;
  std::string all;
  for (const auto& a : allowed) all += (all.empty() ? "" : ",") + a;
  std::size_t start = 0;
  for (;;) {
    const std::size_t comma = text.find(',', start);
    const std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    bool known = false;
    for (const auto& a : allowed) known = known || a == item;
    if (!known)
      throw UsageError(std::string("invalid ") + option + " item '" + item + "': expected a comma-separated list of " + all);
    for (const auto& o : out)
      if (o == item) throw UsageError(std::string(option) + " lists '" + item + "' twice");
    out.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

// "64", "1K", "16M", "1G" (powers of 1024, as nccl-tests reads them).
std::uint64_t parse_bytes(const std::string& text, const char* option) {
  std::uint64_t value = 0;
  std::size_t i = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    value = value * 10 + static_cast<std::uint64_t>(text[i] - '0');
    ++i;
  }
  std::uint64_t scale = 1;
  if (i < text.size() && i + 1 == text.size()) {
    switch (text[i]) {
      case 'k': case 'K': scale = 1ull << 10; ++i; break;
      case 'm': case 'M': scale = 1ull << 20; ++i; break;
      case 'g': case 'G': scale = 1ull << 30; ++i; break;
      default: break;
    }
  }
  if (i == 0 || i != text.size() || value == 0 || value > (1ull << 40))
    throw UsageError(std::string("invalid size '") + text + "' for " + option +
                     ": expected a positive number of bytes with an optional K, M or G suffix");
  return value * scale;
}

DType parse_dtype(const std::string& s) {
  if (s == "f32" || s == "float" || s == "float32") return DType::f32;
  if (s == "f64" || s == "double" || s == "float64") return DType::f64;
  if (s == "bf16" || s == "bfloat16") return DType::bf16;
  throw UsageError("invalid --dtype '" + s + "': expected f32, f64 or bf16");
}

// Returns false when --help was asked for (and printed).
bool parse(int argc, char** argv, Options& o, int world_rank) {
  std::string b = "1K", e = "4M", dtype = "f32", ops = "all_gather,reduce_scatter,all_reduce",
              groups = "partition,replication,world";
  po::options_description desc(
      "Usage: mpirun -np W mics-bench [options]\n"
      "Times all-gather, reduce-scatter and all-reduce on the MiCS groups (partition group flat,\n"
      "or hierarchical with --hierarchical; replication group; world), checks every element\n"
      "of every result, and prints the algorithm, size, count, type, time, algbw, busbw and\n"
      "#wrong per line.\n"
      "size is the full message (the gathered buffer, the reduce-scatter input, the all-reduce\n"
      "buffer); busbw = algbw*(n-1)/n (all-reduce: 2(n-1)/n), n = ranks in the group.\n"
      "At the end: each group's traffic counters (bytes and sends handed to MPI, busy and\n"
      "waiting time), and the partition group's bytes next to the (p-1)/p and (p-g)/p\n"
      "predictions.\n"
      "Exit status 1 if any element is wrong.\n\nOptions");
  desc.add_options()
      ("help,h", "print this help and exit")
      ("version", "print the version, commit, build type and backends, and exit")
      ("minbytes,b", po::value<std::string>(&b)->default_value(b), "smallest message size in bytes (suffix K, M, G = powers of 1024)")
      ("maxbytes,e", po::value<std::string>(&e)->default_value(e), "largest message size in bytes (suffix K, M, G)")
      ("stepfactor,f", po::value<int>(&o.factor)->default_value(o.factor), "multiply the size by this factor (>= 2) from one line to the next")
      ("iters,n", po::value<int>(&o.iters)->default_value(o.iters), "timed iterations per line (>= 1); time is their mean, the slowest rank's")
      ("warmup_iters,w", po::value<int>(&o.warmup)->default_value(o.warmup), "untimed iterations before each line (>= 0)")
      ("dtype,d", po::value<std::string>(&dtype)->default_value(dtype), "element type: f32, f64 or bf16 (bf16 sums use a user MPI_Op in f32)")
      ("ranks-per-node", po::value<int>(&o.ranks_per_node)->default_value(0), "ranks per node g; 0 detects it from the hosts (MPI_COMM_TYPE_SHARED); a value lets one host pose as W/g nodes")
      ("partition-size", po::value<int>(&o.partition_size)->default_value(0), "partition group size p; must divide W and respect node boundaries (p >= g: a multiple of g; p < g: a divisor of g); 0 means p = g")
      ("hierarchical", po::bool_switch(&o.hierarchical), "run the partition group's collectives two-step (zero-copy hierarchical all-gather and reduce-scatter; all-reduce as both in turn) instead of flat, when it spans nodes")
      ("flat-all-reduce", po::bool_switch(&o.flat_all_reduce), "run all-reduces over ranks on several nodes with 2 or more on each as one flat ring instead of the two-level hierarchical_ring (intra-node reduce-scatter, inter-node all-reduce, intra-node all-gather)")
      ("ops", po::value<std::string>(&ops)->default_value(ops), "collectives to run: comma-separated, any of all_gather, reduce_scatter, all_reduce")
      ("groups", po::value<std::string>(&groups)->default_value(groups), "groups to run them on: comma-separated, any of partition, replication, world")
      ("csv", po::value<std::string>(&o.csv), "also write every line to this CSV file (rank 0 writes it)");
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    po::notify(vm);
  } catch (const po::error& err) {
    throw UsageError(std::string(err.what()) + " (see --help)");
  }
  if (vm.count("help") || vm.count("version")) {
    if (world_rank == 0 && vm.count("version")) std::cout << mics::version_text("mics-bench");
    if (world_rank == 0 && vm.count("help")) std::cout << desc << "\n";
    return false;
  }
  o.min_bytes = parse_bytes(b, "--minbytes/-b");
  o.max_bytes = parse_bytes(e, "--maxbytes/-e");
  if (o.min_bytes > o.max_bytes)
    throw UsageError("--minbytes " + b + " is larger than --maxbytes " + e);
  if (o.factor < 2) throw UsageError("--stepfactor must be at least 2 (got " + std::to_string(o.factor) + ")");
  if (o.iters < 1) throw UsageError("--iters must be at least 1 (got " + std::to_string(o.iters) + ")");
  if (o.warmup < 0) throw UsageError("--warmup_iters must be 0 or more (got " + std::to_string(o.warmup) + ")");
  if (o.partition_size < 0)
    throw UsageError("--partition-size must be positive, or 0 for one node (got " + std::to_string(o.partition_size) + ")");
  o.dtype = parse_dtype(dtype);
  o.ops = parse_list(ops, "--ops", {"all_gather", "reduce_scatter", "all_reduce"});
  o.groups = parse_list(groups, "--groups", {"partition", "replication", "world"});
  return true;
}

// ---- test data, exact in every type (bf16 included) for up to 128 ranks --------------
double chunk_value(int world, std::size_t e) { return static_cast<double>((world * 13 + static_cast<int>(e % 1024)) % 200); }
double contribution(int world, std::size_t e) { return static_cast<double>((world + static_cast<int>(e % 1024)) % 3); }

class HostBuffer {
public:
  HostBuffer(DType dt, std::size_t n) : dt_(dt), bytes_(n * mics::comm::dtype_size(dt) + 64) {}
  void* data() { return bytes_.data(); }
  void set(std::size_t i, double v) {
    unsigned char* p = bytes_.data() + i * mics::comm::dtype_size(dt_);
    if (dt_ == DType::f32) { const float f = static_cast<float>(v); std::memcpy(p, &f, 4); }
    else if (dt_ == DType::f64) std::memcpy(p, &v, 8);
    else { const auto b = mics::device::float_to_bf16(static_cast<float>(v)); std::memcpy(p, &b.bits, 2); }
  }
  double get(std::size_t i) const {
    const unsigned char* p = bytes_.data() + i * mics::comm::dtype_size(dt_);
    if (dt_ == DType::f32) { float f; std::memcpy(&f, p, 4); return static_cast<double>(f); }
    if (dt_ == DType::f64) { double d; std::memcpy(&d, p, 8); return d; }
    mics::device::bf16_t b; std::memcpy(&b.bits, p, 2);
    return static_cast<double>(mics::device::bf16_to_float(b));
  }

private:
  DType dt_;
  std::vector<unsigned char> bytes_;
};

enum class Op { all_gather, reduce_scatter, all_reduce };
const char* op_name(Op op) {
  return op == Op::all_gather ? "all_gather" : op == Op::reduce_scatter ? "reduce_scatter" : "all_reduce";
}

// One benchmarked (operation, group, algorithm).
struct Target {
  Op op;
  const char* group;  // "partition", "replication", "world"
  bool hierarchical;
};

struct Row {
  std::string op, group, algo, type;
  std::uint64_t bytes = 0, count = 0;
  double us = 0, algbw = 0, busbw = 0;
  long wrong = 0;
};

// Everything one line needs; returns the row (identical on every rank).
class Bench {
public:
  Bench(const Options& o, ProcessGroups& pg, MpiCollectives& coll) : o_(o), pg_(pg), coll_(coll) {
    MPI_Comm_rank(MPI_COMM_WORLD, &me_);
  }

  Group& group_of(const Target& t) {
    if (std::strcmp(t.group, "partition") == 0) return pg_.partition();
    if (std::strcmp(t.group, "replication") == 0) return pg_.replication();
    return pg_.world();
  }

  Row run(const Target& t, std::uint64_t size) {
    Group& g = group_of(t);
    const auto n = static_cast<std::size_t>(g.size());
    const std::size_t es = mics::comm::dtype_size(o_.dtype);
    // chunk: elements per rank (all-gather, reduce-scatter); count: elements in the message.
    std::size_t chunk = 0, count = 0;
    const bool two_step = t.hierarchical && std::strcmp(t.group, "partition") == 0;
    if (t.op == Op::all_reduce && !two_step) {
      count = std::max<std::size_t>(1, size / es);
    } else {
      chunk = std::max<std::size_t>(1, size / (n * es));
      count = chunk * n;
    }
    HostBuffer buf(o_.dtype, count), out(o_.dtype, std::max<std::size_t>(chunk, 1));
    auto once = [&] {
      switch (t.op) {
        case Op::all_gather:
          if (std::strcmp(t.group, "partition") == 0) coll_.gather_partition(buf.data(), chunk, o_.dtype, pg_, t.hierarchical).wait();
          else coll_.all_gather(buf.data(), chunk, o_.dtype, g).wait();
          break;
        case Op::reduce_scatter:
          if (std::strcmp(t.group, "partition") == 0) coll_.reduce_scatter_partition(buf.data(), out.data(), chunk, o_.dtype, pg_, t.hierarchical).wait();
          else coll_.reduce_scatter(buf.data(), out.data(), chunk, o_.dtype, g).wait();
          break;
        case Op::all_reduce:
          if (!two_step) {
            coll_.all_reduce(buf.data(), count, o_.dtype, g).wait();
            break;
          }
          // Two-step reduce-scatter, then the rank's sum back in place and the two-step
          // all-gather: the hierarchical all-reduce, (p-g)/p M across nodes each way.
          coll_.reduce_scatter_partition(buf.data(), out.data(), chunk, o_.dtype, pg_, true).wait();
          std::memcpy(static_cast<char*>(buf.data()) + static_cast<std::size_t>(g.rank()) * chunk * es, out.data(),
                      chunk * es);
          coll_.gather_partition(buf.data(), chunk, o_.dtype, pg_, true).wait();
          break;
      }
    };
    // All-reduce in place would grow the values without bound; refill is cheap enough
    // compared with the timed loop only for the check, so time it on whatever is there.
    fill(t, g, buf, chunk, count);
    for (int i = 0; i < o_.warmup; ++i) once();
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = MPI_Wtime();
    for (int i = 0; i < o_.iters; ++i) once();
    double secs = (MPI_Wtime() - t0) / o_.iters, slowest = 0;
    MPI_Allreduce(&secs, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);

    fill(t, g, buf, chunk, count);
    once();
    long wrong = check(t, g, buf, out, chunk, count), total_wrong = 0;
    MPI_Allreduce(&wrong, &total_wrong, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);

    Row r;
    r.op = op_name(t.op);
    r.group = t.group;
    r.algo = algorithm(t, g, count);
    r.type = mics::comm::dtype_name(o_.dtype);
    r.bytes = count * es;
    r.count = count;
    r.us = slowest * 1e6;
    r.algbw = static_cast<double>(r.bytes) / slowest / 1e9;
    const double nn = static_cast<double>(n);
    r.busbw = r.algbw * (t.op == Op::all_reduce ? 2.0 * (nn - 1) / nn : (nn - 1) / nn);
    r.wrong = total_wrong;
    calls_ = o_.warmup + o_.iters + 1;  // warmup, timed, check
    message_ = r.bytes;
    return r;
  }

  // Calls made by the last run() and the message size of each (for the traffic summary).
  int last_calls() const { return calls_; }
  std::uint64_t last_message() const { return message_; }

private:
  // What ran: the backend's ring (or recursive doubling for small all-reduces, or the
  // two-level hierarchical_ring over several nodes), or the two-step hierarchical path of rings on the inter- and intra-node groups.
  std::string algorithm(const Target& t, const Group& g, std::size_t count) const {
    if (g.size() == 1) return "none";
    if (t.hierarchical) return t.op == Op::all_reduce ? "2step_rs+ag" : "2step_ring";
    if (t.op == Op::all_reduce) return MpiCollectives::all_reduce_algorithm(count, o_.dtype, g);
    return "ring";
  }

  std::vector<int> members(Group& g) {
    std::vector<int> m(static_cast<std::size_t>(g.size()));
    MPI_Allgather(&me_, 1, MPI_INT, m.data(), 1, MPI_INT, g.comm());
    return m;
  }

  void fill(const Target& t, Group& g, HostBuffer& buf, std::size_t chunk, std::size_t count) {
    if (t.op == Op::all_gather) {
      for (std::size_t i = 0; i < count; ++i) buf.set(i, -1.0);
      const auto r = static_cast<std::size_t>(g.rank());
      for (std::size_t e = 0; e < chunk; ++e) buf.set(r * chunk + e, chunk_value(me_, e));
    } else {
      for (std::size_t i = 0; i < count; ++i) buf.set(i, contribution(me_, i));
    }
  }

  long check(const Target& t, Group& g, const HostBuffer& buf, const HostBuffer& out, std::size_t chunk,
             std::size_t count) {
    const std::vector<int> who = members(g);
    long wrong = 0;
    if (t.op == Op::all_gather) {
      for (std::size_t r = 0; r < who.size(); ++r)
        for (std::size_t e = 0; e < chunk; ++e) wrong += buf.get(r * chunk + e) != chunk_value(who[r], e);
    } else if (t.op == Op::reduce_scatter) {
      const auto base = static_cast<std::size_t>(g.rank()) * chunk;
      for (std::size_t e = 0; e < chunk; ++e) {
        double expect = 0;
        for (int w : who) expect += contribution(w, base + e);
        wrong += out.get(e) != expect;
      }
    } else {
      for (std::size_t i = 0; i < count; ++i) {
        double expect = 0;
        for (int w : who) expect += contribution(w, i);
        wrong += buf.get(i) != expect;
      }
    }
    return wrong;
  }

  const Options& o_;
  ProcessGroups& pg_;
  MpiCollectives& coll_;
  int me_ = 0;
  int calls_ = 0;
  std::uint64_t message_ = 0;
};

GroupCounters delta(const GroupCounters& after, const GroupCounters& before) {
  return {after.calls - before.calls,           after.sends - before.sends,
          after.bytes - before.bytes,           after.message_bytes - before.message_bytes,
          after.seconds - before.seconds,       after.exposed_seconds - before.exposed_seconds};
}

std::uint64_t sum_over(MPI_Comm comm, std::uint64_t v) {
  std::uint64_t s = 0;
  MPI_Allreduce(&v, &s, 1, MPI_UINT64_T, MPI_SUM, comm);
  return s;
}

int bench_main(int argc, char** argv) {
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  Options o;
  if (!parse(argc, argv, o, rank)) return 0;

  // Resolve p = 0 (one node) against the node size, which detection may supply.
  int g = o.ranks_per_node;
  if (o.partition_size == 0 && g == 0) {
    ProcessGroups probe = mics::comm::make_process_groups(MPI_COMM_WORLD, 0, 1, false);
    g = probe.plan().ranks_per_node();
  }
  const int p = o.partition_size == 0 ? g : o.partition_size;
  ProcessGroups pg = mics::comm::make_process_groups(MPI_COMM_WORLD, o.ranks_per_node, p, o.hierarchical,
                                                     !o.flat_all_reduce);
  const auto& plan = pg.plan();
  MpiCollectives coll;
  Bench bench(o, pg, coll);

  std::vector<Target> targets;
  for (Op op : {Op::all_gather, Op::reduce_scatter, Op::all_reduce}) {
    bool wanted = false;
    for (const auto& name : o.ops) wanted = wanted || name == op_name(op);
    if (!wanted) continue;
    for (const char* grp : {"partition", "replication", "world"})
      for (const auto& name : o.groups)
        if (name == grp)
          targets.push_back({op, grp, std::strcmp(grp, "partition") == 0 && o.hierarchical && plan.spans_nodes()});
  }

  // Only rank 0 writes the CSV; agree() makes a failure to open it everyone's error.
  std::ofstream csv;
  std::string csv_error;
  if (rank == 0 && !o.csv.empty()) {
    csv.open(o.csv);
    if (!csv) csv_error = "cannot write the --csv file '" + o.csv + "'";
    else csv << "collective,group,algo,group_size,size_bytes,count,type,time_us,algbw_GBps,busbw_GBps,wrong\n";
  }
  mics::agree(MPI_COMM_WORLD, csv_error);

  // The limit the busbw column runs into here: ranks share memory, so a collective is a
  // set of copies. Rank 0 times memcpy of the largest message while the others wait.
  double limit_gbps = 0;
  if (rank == 0) {
    std::vector<unsigned char> a(o.max_bytes, 1), b(o.max_bytes, 0);
    std::memcpy(b.data(), a.data(), a.size());
    const int reps = 5;
    const double t0 = MPI_Wtime();
    for (int i = 0; i < reps; ++i) {
      a[static_cast<std::size_t>(i)] = static_cast<unsigned char>(i);
      std::memcpy(b.data(), a.data(), a.size());
    }
    const double gbps = static_cast<double>(o.max_bytes) * reps / (MPI_Wtime() - t0) / 1e9;
    volatile unsigned char sink = b[1];  // keeps the copies observable
    (void)sink;
    limit_gbps = gbps;
  }
  MPI_Barrier(MPI_COMM_WORLD);

  if (rank == 0) {
    std::printf("# mics-bench: %s; %s, %d warmup + %d timed iterations per line\n", plan.describe().c_str(),
                mics::comm::dtype_name(o.dtype), o.warmup, o.iters);
    if (o.hierarchical && !plan.spans_nodes())
      std::printf("# --hierarchical: the partition group lies inside one node, so only flat collectives run\n");
    std::printf("# progress: %s\n", coll.progress_thread()
                                       ? "a communication thread (MPI_THREAD_MULTIPLE)"
                                       : "inside test/wait only (MPI thread level below MULTIPLE)");
    std::printf("# limit: memcpy of %" PRIu64 " bytes by one rank alone: %.2f GB/s (ranks share memory, so\n"
                "#        every collective here is copies; busbw is bounded by about this)\n",
                o.max_bytes, limit_gbps);
    std::printf("#\n# %-14s %-11s %-18s %5s %12s %12s %5s %10s %11s %11s %7s\n", "collective", "group", "algo", "n",
                "size(B)", "count", "type", "time(us)", "algbw(GB/s)", "busbw(GB/s)", "#wrong");
  }


  pg.reset_counters();
  struct Tally { GroupCounters partition, inter, intra; std::uint64_t message = 0; };
  Tally ag_flat, ag_hier;
  long total_wrong = 0;
  for (const Target& t : targets) {
    for (std::uint64_t size = o.min_bytes; size <= o.max_bytes; size *= static_cast<std::uint64_t>(o.factor)) {
      const GroupCounters pb = pg.partition().counters();
      const GroupCounters ib = pg.spans_nodes() ? pg.inter().counters() : GroupCounters{};
      const GroupCounters nb = pg.spans_nodes() ? pg.intra().counters() : GroupCounters{};
      const Row r = bench.run(t, size);
      total_wrong += r.wrong;
      if (t.op == Op::all_gather && std::strcmp(t.group, "partition") == 0) {
        Tally& tally = t.hierarchical ? ag_hier : ag_flat;
        auto add = [](GroupCounters& acc, const GroupCounters& d) {
          acc.calls += d.calls; acc.sends += d.sends; acc.bytes += d.bytes; acc.message_bytes += d.message_bytes;
          acc.seconds += d.seconds; acc.exposed_seconds += d.exposed_seconds;
        };
        add(tally.partition, delta(pg.partition().counters(), pb));
        if (pg.spans_nodes()) {
          add(tally.inter, delta(pg.inter().counters(), ib));
          add(tally.intra, delta(pg.intra().counters(), nb));
        }
        tally.message += static_cast<std::uint64_t>(bench.last_calls()) * bench.last_message();
      }
      if (rank == 0) {
        const int n = bench.group_of(t).size();
        std::printf("  %-14s %-11s %-18s %5d %12" PRIu64 " %12" PRIu64 " %5s %10.2f %11.4f %11.4f %7ld\n", r.op.c_str(),
                    r.group.c_str(), r.algo.c_str(), n, r.bytes, r.count, r.type.c_str(), r.us, r.algbw, r.busbw,
                    r.wrong);
        if (csv.is_open())
          csv << r.op << ',' << r.group << ',' << r.algo << ',' << n << ',' << r.bytes << ',' << r.count << ','
              << r.type << ',' << r.us << ',' << r.algbw << ',' << r.busbw << ',' << r.wrong << '\n';
      }
      if (size > o.max_bytes / static_cast<std::uint64_t>(o.factor)) break;
    }
  }

  // Counters of every group over the whole run, this rank's view.
  if (rank == 0) {
    std::printf("#\n# Counters of rank 0 over the whole run (sends, bytes: what this rank handed to MPI;\n"
                "# busy: union of the intervals with a collective of the group in flight; waited: time\n"
                "# blocked in wait())\n");
    std::printf("# %-12s %5s %8s %8s %14s %16s %10s %10s\n", "group", "size", "calls", "sends", "bytes", "message bytes",
                "busy(s)", "waited(s)");
    for (Group* grp : pg.groups()) {
      const auto c = grp->counters();
      std::printf("  %-12s %5d %8" PRIu64 " %8" PRIu64 " %14" PRIu64 " %16" PRIu64 " %10.4f %10.4f\n", grp->name().c_str(),
                  grp->size(), c.calls, c.sends, c.bytes, c.message_bytes, c.seconds, c.exposed_seconds);
    }
  }

  // All-gather traffic over the partition group against the ring volumes. M is the total
  // all-gather message (every call: warmup, timed and check) on this partition group.
  const int P = plan.partition_size(), G = plan.group_ranks_per_node(), K = plan.nodes_per_group();
  if (rank == 0) {
    std::printf("#\n# All-gather traffic on the partition group (p=%d, %d ranks per node in it, k=%d nodes), from the counters\n", P, G, K);
    if (ag_flat.message)
      std::printf("#   flat:         bytes sent per rank              %14" PRIu64 " = %.4f M   prediction (p-1)/p = %.4f M   (M = %" PRIu64 ")\n",
                  ag_flat.partition.bytes, static_cast<double>(ag_flat.partition.bytes) / static_cast<double>(ag_flat.message),
                  static_cast<double>(P - 1) / P, ag_flat.message);
  }
  if (pg.spans_nodes() && ag_hier.message) {
    // Per node: summed over the node's ranks of this partition group.
    const std::uint64_t inter_node = sum_over(pg.intra().comm(), ag_hier.inter.bytes);
    const std::uint64_t intra_node = sum_over(pg.intra().comm(), ag_hier.intra.bytes);
    if (rank == 0) {
      const double M = static_cast<double>(ag_hier.message);
      std::printf("#   hierarchical: inter-node bytes per node        %14" PRIu64 " = %.4f M   prediction (p-g)/p = %.4f M   (M = %" PRIu64 ")\n",
                  inter_node, static_cast<double>(inter_node) / M, static_cast<double>(P - G) / P, ag_hier.message);
      std::printf("#                 intra-node bytes per rank        %14" PRIu64 " = %.4f M   prediction (p-k)/p = %.4f M\n",
                  ag_hier.intra.bytes, static_cast<double>(ag_hier.intra.bytes) / M, static_cast<double>(P - K) / P);
      std::printf("#                 intra-node bytes per node        %14" PRIu64 " = %.4f M   prediction g(p-k)/p = %.4f M\n",
                  intra_node, static_cast<double>(intra_node) / M, static_cast<double>(G) * (P - K) / P);
      std::printf("#   (the flat ring runs in node order, so (p-1)/p M leaves each node once: one rank per\n"
                  "#    node sends to the next node; the two-step path sends (p-g)/p M per node across)\n");
    }
  }

  if (rank == 0) {
    std::printf("#\n# Wrong elements in all lines: %ld %s\n", total_wrong, total_wrong ? "ERROR" : "OK");
    std::fflush(stdout);
  }
  if (total_wrong) throw mics::Error(std::to_string(total_wrong) + " wrong elements in the results (see #wrong)", true);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return mics::run_mpi_program("mics-bench", argc, argv, bench_main); }
