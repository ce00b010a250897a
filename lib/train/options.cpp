#include "mics/train/options.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "mics/core/error.hpp"
#include "mics/core/version.hpp"
#include "mics/train/tools.hpp"

namespace po = boost::program_options;

namespace mics::train {

namespace {
constexpr const char* kHelpHeader =
    "mics-train: MiCS data-parallel training of a built-in transformer\n\n"
    "usage: mpirun -np N mics-train [options]\n";
}  // namespace

po::options_description option_description() {
  po::options_description general("General");
  general.add_options()
    ("help,h", "print this help and exit")
    ("version", "print the version, commit, build type and backends, and exit")
    ("config", po::value<std::vector<std::string>>()->composing(),
     "read options from FILE (key = value lines, same keys as the long options; the command "
     "line wins); may be repeated");

  po::options_description model("Model (a preset file and overrides)");
  model::add_model_options(model);

  po::options_description data("Data");
  data.add_options()
    ("data", po::value<std::string>()->default_value("synthetic"),
     "training data: 'synthetic' (a learnable Markov chain), DIR/name (DIR/name_train.bin and "
     "DIR/name_val.bin, as written by mics-data convert), or one FILE.bin token shard");

  po::options_description parallel("Parallelism");
  parallel.add_options()
    ("strategy", po::value<std::string>()->default_value("mics"),
     "ddp (p=1), zero2 (parameters replicated, gradients and optimizer states sharded over the "
     "world), zero3 (p=W), or mics (p from --partition-size)")
    ("partition-size", po::value<std::string>()->default_value("auto"),
     "ranks per partition group for mics: a number that divides the world and respects node "
     "boundaries, or 'auto' (the smallest such group whose model states fit --memory-per-rank)")
    ("hierarchical", po::value<bool>()->default_value(false)->implicit_value(true),
     "two-step (inter-node, then intra-node) all-gather and reduce-scatter when a partition "
     "group spans nodes")
    ("hierarchical-all-reduce", po::value<bool>()->default_value(true),
     "--comm mpi: an all-reduce over ranks on several nodes with the same number (2 or more) "
     "on each (ddp's gradients, mics's replication group when p < ranks per node) runs "
     "two-level: reduce-scatter inside each node, all-reduce across nodes, all-gather inside "
     "each node; 2(N-1)/N of the message per node link for N nodes instead of 2(n-1)/n. "
     "false keeps one flat ring")
    ("ranks-per-node", po::value<int>()->default_value(0),
     "ranks per node; 0 detects it from shared memory, a positive value lets one host pose as "
     "several nodes")
    ("grad-sync", po::value<std::string>()->default_value("two-hop"),
     "two-hop (replication all-reduce once per optimizer step) or every-micro-step (the ablation)")
    ("overlap-grad-sync", po::value<bool>()->default_value(true),
     "two-hop: start each bucket's replication all-reduce during the last micro-step's backward, "
     "as soon as its gradient is reduced (false: all of them after the backward)")
    ("prefetch", po::value<bool>()->default_value(true),
     "gather the next bucket while the current one computes (false to turn off)")
    ("recompute", po::value<bool>()->default_value(false)->implicit_value(true),
     "activation recomputation: keep only each block's output and recompute the block in the "
     "backward pass (less memory, 4/3 of the compute)");

  po::options_description batch("Batch and schedule");
  batch.add_options()
    ("global-batch", po::value<int>()->default_value(8), "sequences per optimizer step, all ranks")
    ("micro-batch", po::value<int>()->default_value(1),
     "sequences per rank per micro-step; the global batch is ranks x micro-batch x accumulation")
    ("steps", po::value<int>()->default_value(20), "optimizer steps to run (in total, with --resume)")
    ("seed", po::value<std::uint64_t>()->default_value(1234),
     "seed of the initialisation and of the data order (any layout sees the same model and data)")
    ("lr", po::value<double>()->default_value(3e-4, "3e-4"), "peak learning rate")
    ("min-lr", po::value<double>()->default_value(3e-5, "3e-5"), "learning rate at the end of the cosine decay")
    ("warmup", po::value<int>()->default_value(10), "linear warm-up steps")
    ("decay-steps", po::value<int>()->default_value(0), "end of the cosine decay (0: --steps)")
    ("weight-decay", po::value<double>()->default_value(0.1, "0.1"),
     "decoupled weight decay (never on biases and LayerNorm)")
    ("grad-clip", po::value<double>()->default_value(1.0), "global gradient-norm clip (0: off)")
    ("beta1", po::value<double>()->default_value(0.9, "0.9"), "Adam beta1")
    ("beta2", po::value<double>()->default_value(0.95, "0.95"), "Adam beta2")
    ("eps", po::value<double>()->default_value(1e-8, "1e-8"), "Adam epsilon");

  po::options_description dev("Device and communication");
  dev.add_options()
    ("backend", po::value<std::string>()->default_value("cpu"),
     "cpu, cuda, or emulated (the compute model: real buffers, copies and collectives, but "
     "each kernel only sleeps its modelled time; losses are not computed)")
    ("emulated-tflops", po::value<double>()->default_value(0),
     "--backend emulated: the modelled device's dense rate in TFLOPS (kernel time = FLOPs / rate)")
    ("emulated-mem-gbps", po::value<double>()->default_value(0),
     "--backend emulated: its memory bandwidth in GB/s (kernel time at least bytes / bandwidth; "
     "0: memory traffic not modelled)")
    ("threads", po::value<int>()->default_value(0), "CPU backend threads per rank (0: OMP_NUM_THREADS)")
    ("device", po::value<int>()->default_value(-1), "GPU ordinal (-1: local rank modulo GPUs)")
    ("compute-dtype", po::value<std::string>(),
     "compute type of parameters and activations: f32 (CPU default) or bf16 (CUDA default)")
    ("grad-reduce-dtype", po::value<std::string>()->default_value("f32"),
     "type gradients are reduced in, both hops (the f32 accumulator is cast for the "
     "replication all-reduce and back): f32 or the compute type")
    ("comm", po::value<std::string>(),
     "data path: mpi (host memory; host-staged for GPU buffers) or nccl (CUDA default)")
    ("comm-timeout", po::value<double>()->default_value(300),
     "seconds any wait on other ranks (a collective, an agreement; CPU and GPU) may make no "
     "progress before the job ends with a line naming what it waited for (0: wait forever)")
    ("memory-per-rank", po::value<double>()->default_value(0),
     "GiB of memory per rank for --partition-size auto (0: the device's memory)")
    ("peak-tflops", po::value<double>()->default_value(0),
     "dense peak TFLOPS of one rank's device for MFU (0: known GPUs only)");

  po::options_description out("Output");
  out.add_options()
    ("metrics", po::value<std::string>()->default_value(""),
     "write one CSV row per step (header: step, loss, ... and the layout) to FILE")
    ("metrics-jsonl", po::value<std::string>()->default_value(""), "the same rows as JSON lines")
    ("log-every", po::value<int>()->default_value(1), "print a step line every N steps")
    ("eval-every", po::value<int>()->default_value(0),
     "validation loss every N steps (0: at the end only, when there are validation data)")
    ("eval-batches", po::value<int>()->default_value(4), "global batches per validation");

  po::options_description ckpt("Checkpoints");
  ckpt.add_options()
    ("checkpoint-dir", po::value<std::string>()->default_value(""), "directory for checkpoints")
    ("checkpoint-every", po::value<int>()->default_value(0), "save every N steps (0: at the end only)")
    ("keep-last", po::value<int>()->default_value(0),
     "keep this run's newest N checkpoints (0: all); other runs' files are never removed")
    ("overwrite-checkpoints", po::value<bool>()->default_value(false)->implicit_value(true),
     "let a fresh run take over a --checkpoint-dir that holds another run's checkpoints "
     "(they are removed first; without this such a folder is refused)")
    ("max-bad-steps", po::value<int>()->default_value(5),
     "stop (exit 1) after N optimizer steps in a row with a non-finite loss or gradient norm; "
     "such steps are skipped (no update)")
    ("resume", po::value<std::string>()->default_value(""),
     "continue from a checkpoint file, a directory, or 'latest' (in --checkpoint-dir); any "
     "world size, partition size or strategy");

  // No caption: Boost would end it with a line holding only ":" (see kHelpHeader).
  po::options_description all;
  all.add(general).add(model).add(data).add(parallel).add(batch).add(dev).add(out).add(ckpt);
  all.add(tool_options());  // --eval-only, --sample-every ... (tool_options.cpp)
  return all;
}

namespace {

template <class T>
T get(const po::variables_map& vm, const char* key) {
  return vm[key].as<T>();
}

void require(bool ok, const std::string& message) {
  if (!ok) throw UsageError(message);
}

}  // namespace

bool parse_options(int argc, char** argv, RunOptions& o, std::string& help_out) {
  const po::options_description desc = option_description();
  po::variables_map vm;
  std::ostringstream given;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    for (int i = 1; i < argc; ++i) given << (i > 1 ? " " : "") << argv[i];
    given << "\n";
    if (vm.count("config")) {
      for (const auto& path : vm["config"].as<std::vector<std::string>>()) {
        std::ifstream in(path);
        // A directory opens as an empty stream on Linux: reject it rather than read nothing.
        if (!in || std::filesystem::is_directory(path))
          throw UsageError("cannot read --config file '" + path + "'; check the path");
        std::ostringstream text;
        text << in.rdbuf();
        given << "# " << path << "\n" << text.str();
        std::istringstream parse(text.str());
        try {
          po::store(po::parse_config_file(parse, desc), vm);
        } catch (const po::error& e) {
          throw UsageError("in --config file '" + path + "': " + e.what() + "; see mics-train --help");
        }
      }
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(std::string(e.what()) + "; see mics-train --help");
  }
  if (vm.count("help")) {
    std::ostringstream os;
    os << kHelpHeader << desc;
    help_out = os.str();
    return false;
  }
  if (vm.count("version")) {
    help_out = version_text("mics-train");
    return false;
  }
  o.config_text = given.str();

  o.model = model::model_config_from_variables(vm);
  o.data = get<std::string>(vm, "data");

  auto& t = o.train;
  t.strategy = engine::parse_strategy(get<std::string>(vm, "strategy"));
  const std::string ps = get<std::string>(vm, "partition-size");
  if (ps == "auto") {
    o.partition_auto = t.strategy == engine::Strategy::mics;
    t.partition_size = 0;
  } else {
    std::size_t used = 0;
    int value = 0;
    try {
      value = std::stoi(ps, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    require(used == ps.size() && value > 0,
            "--partition-size '" + ps + "' must be a positive number of ranks or 'auto'");
    t.partition_size = value;
  }
  t.hierarchical = get<bool>(vm, "hierarchical");
  t.hierarchical_all_reduce = get<bool>(vm, "hierarchical-all-reduce");
  t.ranks_per_node = get<int>(vm, "ranks-per-node");
  require(t.ranks_per_node >= 0, "--ranks-per-node " + std::to_string(t.ranks_per_node) +
                                     " must be 0 (detect) or a positive number of ranks");
  t.grad_sync = engine::parse_grad_sync(get<std::string>(vm, "grad-sync"));
  t.prefetch = get<bool>(vm, "prefetch");
  t.overlap_grad_sync = get<bool>(vm, "overlap-grad-sync");
  t.recompute = get<bool>(vm, "recompute");
  t.global_batch = get<int>(vm, "global-batch");
  t.micro_batch = get<int>(vm, "micro-batch");
  t.steps = get<int>(vm, "steps");
  require(t.steps >= 0, "--steps " + std::to_string(t.steps) + " must not be negative");
  require(t.global_batch > 0, "--global-batch " + std::to_string(t.global_batch) + " must be at least 1");
  require(t.micro_batch > 0, "--micro-batch " + std::to_string(t.micro_batch) + " must be at least 1");
  t.seed = get<std::uint64_t>(vm, "seed");
  t.memory_per_rank_gib = get<double>(vm, "memory-per-rank");
  require(t.memory_per_rank_gib >= 0, "--memory-per-rank must not be negative");

  auto& opt = t.optimizer;
  opt.lr = get<double>(vm, "lr");
  opt.min_lr = get<double>(vm, "min-lr");
  opt.warmup_steps = get<int>(vm, "warmup");
  opt.decay_steps = get<int>(vm, "decay-steps");
  opt.weight_decay = get<double>(vm, "weight-decay");
  opt.grad_clip = get<double>(vm, "grad-clip");
  opt.beta1 = get<double>(vm, "beta1");
  opt.beta2 = get<double>(vm, "beta2");
  opt.eps = get<double>(vm, "eps");
  require(opt.lr > 0, "--lr must be positive");
  require(opt.min_lr >= 0 && opt.min_lr <= opt.lr, "--min-lr must lie in [0, --lr]");
  require(opt.warmup_steps >= 0, "--warmup must not be negative");
  require(opt.beta1 >= 0 && opt.beta1 < 1 && opt.beta2 >= 0 && opt.beta2 < 1,
          "--beta1 and --beta2 must lie in [0, 1)");
  require(opt.weight_decay >= 0, "--weight-decay must not be negative");

  o.backend = get<std::string>(vm, "backend");
  require(o.backend == "cpu" || o.backend == "cuda" || o.backend == "emulated",
          "--backend '" + o.backend + "' is not known; choose cpu, cuda or emulated");
  o.emulated_tflops = get<double>(vm, "emulated-tflops");
  o.emulated_mem_gbps = get<double>(vm, "emulated-mem-gbps");
  if (o.backend == "emulated")
    require(o.emulated_tflops > 0 && o.emulated_mem_gbps >= 0,
            "--backend emulated needs --emulated-tflops T > 0 (and --emulated-mem-gbps B >= 0), e.g. "
            "--emulated-tflops 10");
  else
    require(o.emulated_tflops == 0 && o.emulated_mem_gbps == 0,
            "--emulated-tflops and --emulated-mem-gbps apply only to --backend emulated");
  o.threads = get<int>(vm, "threads");
  require(o.threads >= 0, "--threads " + std::to_string(o.threads) + " must be 0 (OMP_NUM_THREADS) or a positive count");
  o.device = get<int>(vm, "device");
  o.compute = device::parse_dtype(vm.count("compute-dtype") ? get<std::string>(vm, "compute-dtype")
                                                            : (o.backend == "cuda" ? "bf16" : "f32"));
  o.grad_reduce = device::parse_dtype(get<std::string>(vm, "grad-reduce-dtype"));
  require(o.grad_reduce == device::DType::f32 || o.grad_reduce == o.compute,
          "--grad-reduce-dtype must be f32 or the compute type (" +
              std::string(device::dtype_name(o.compute)) + ")");
  o.comm = vm.count("comm") ? get<std::string>(vm, "comm") : (o.backend == "cuda" ? "nccl" : "mpi");
  require(o.comm == "mpi" || o.comm == "nccl", "--comm '" + o.comm + "' is not known; choose mpi or nccl");
  require(!(o.comm == "nccl" && o.backend == "cpu"),
          "--comm nccl needs --backend cuda (NCCL moves GPU memory); use --comm mpi on the CPU");
  o.comm_timeout_s = get<double>(vm, "comm-timeout");
  o.peak_tflops = get<double>(vm, "peak-tflops");
  require(o.peak_tflops >= 0, "--peak-tflops must not be negative");

  o.metrics = get<std::string>(vm, "metrics");
  o.metrics_jsonl = get<std::string>(vm, "metrics-jsonl");
  require(o.metrics_jsonl.empty() || !o.metrics.empty(),
          "--metrics-jsonl needs --metrics FILE as well (the JSON lines are the CSV's twin)");
  o.log_every = get<int>(vm, "log-every");
  require(o.log_every > 0, "--log-every must be at least 1");
  o.eval_every = get<int>(vm, "eval-every");
  o.eval_batches = get<int>(vm, "eval-batches");
  require(o.eval_every >= 0 && o.eval_batches >= 0, "--eval-every and --eval-batches must not be negative");
  o.checkpoint_dir = get<std::string>(vm, "checkpoint-dir");
  o.checkpoint_every = get<int>(vm, "checkpoint-every");
  o.keep_last = get<int>(vm, "keep-last");
  require(o.checkpoint_every >= 0 && o.keep_last >= 0,
          "--checkpoint-every and --keep-last must not be negative");
  require(o.checkpoint_every == 0 || !o.checkpoint_dir.empty(),
          "--checkpoint-every needs --checkpoint-dir DIR");
  o.overwrite_checkpoints = get<bool>(vm, "overwrite-checkpoints");
  o.max_bad_steps = get<int>(vm, "max-bad-steps");
  require(o.max_bad_steps >= 1, "--max-bad-steps must be at least 1");
  require(o.comm_timeout_s >= 0, "--comm-timeout must not be negative (0 turns the watchdog off)");
  o.resume = get<std::string>(vm, "resume");
  require(o.resume != "latest" || !o.checkpoint_dir.empty(),
          "--resume latest needs --checkpoint-dir DIR");
  read_tool_options(vm, o);  // --eval-only, --sample-every ... (tool_options.cpp)
  return true;
}

}  // namespace mics::train
