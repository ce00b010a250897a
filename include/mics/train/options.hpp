#pragma once
// mics-train's options: one description shared by the command line and config files
// (--config FILE, Boost.Program_options syntax: `key = value`, same keys as the long
// options), turned into the objects a training run needs.
#include <cstdint>
#include <string>

#include <boost/program_options.hpp>

#include "mics/device/dtype.hpp"
#include "mics/engine/train_config.hpp"
#include "mics/model/config.hpp"

namespace mics::train {

struct RunOptions {
  model::ModelConfig model;
  engine::TrainConfig train;
  bool partition_auto = false;      // --partition-size auto
  std::string data = "synthetic";   // --data: synthetic | DIR/name | FILE.bin
  std::string backend = "cpu";      // cpu | cuda | emulated
  double emulated_tflops = 0;       // --backend emulated: modelled compute rate
  double emulated_mem_gbps = 0;     // and memory bandwidth (0: not modelled)
  int threads = 0;                  // CPU backend threads (0: OMP_NUM_THREADS or all)
  int device = -1;                  // GPU ordinal (-1: local rank modulo GPUs)
  device::DType compute = device::DType::f32;
  device::DType grad_reduce = device::DType::f32;
  std::string comm = "mpi";         // mpi | nccl
  double comm_timeout_s = 300;     // watchdog on every blocking wait, any backend (0: off)
  double peak_tflops = 0;           // 0: the device's, when known
  std::string metrics;              // CSV file
  std::string metrics_jsonl;        // JSON-lines twin
  int log_every = 1;
  int eval_every = 0;               // 0: evaluate at the end only (when there are val data)
  int eval_batches = 4;
  std::string checkpoint_dir;
  int checkpoint_every = 0;
  int keep_last = 0;
  std::string resume;               // a file, a directory, or "latest"
  bool overwrite_checkpoints = false;  // a fresh run may take over another run's folder
  int max_bad_steps = 5;            // stop after this many non-finite steps in a row
  std::string config_text;          // the options as given, stored in checkpoints
  // Around a trained model (tools.hpp): evaluation only and periodic samples.
  bool eval_only = false;           // --eval-only: validation loss of --resume, then exit
  std::string eval_output;          // --eval-output FILE: append that result as a JSON line
  int sample_every = 0;             // --sample-every N (0: never)
  int sample_tokens = 128;
  std::string sample_prompt;        // empty: start a new document (end-of-text token)
  double sample_temperature = 1.0;
};

boost::program_options::options_description option_description();

// Parses argv (and --config files). Returns false when --help was asked for (the help
// text is written to `help_out`). Throws mics::UsageError for anything wrong.
bool parse_options(int argc, char** argv, RunOptions& out, std::string& help_out);

}  // namespace mics::train
