// mics-ckpt: look inside, check and export mics checkpoints. Runs as one process or
// under mpirun (verify then spreads the tensors over the ranks).
#include <boost/program_options.hpp>
#include <cstdio>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "mics/checkpoint/checkpoint.hpp"
#include "mics/core/error.hpp"
#include "mics/core/mpi_env.hpp"
#include "mics/core/version.hpp"
#include "mics/model/generate.hpp"
#include "mics/model/config.hpp"
#include "mics/model/layout.hpp"

namespace ck = mics::checkpoint;

namespace {
constexpr const char* kUsage =
    "usage: mics-ckpt info FILE|DIR\n"
    "       mics-ckpt verify FILE|DIR\n"
    "       mics-ckpt export FILE|DIR --output OUT [--format safetensors|hf] [--force]\n"
    "       mics-ckpt --version\n"
    "\n"
    "  info     step, metadata, the layout that wrote it, every tensor with its shape\n"
    "  verify   reads every tensor and checks its checksum and shape; exit 1 on any fault\n"
    "  export   writes the fp32 weights (/model/*) to OUT in the safetensors format\n"
    "           (after verifying them); --force replaces an existing OUT.\n"
    "           --format hf (GPT models): OUT is a folder for Hugging Face transformers:\n"
    "           OUT/model.safetensors (GPT-2 names), OUT/config.json, OUT/README.md\n"
    "A DIR means its `latest` checkpoint (or its highest step_*.h5).\n";

std::string shape_text(const std::vector<std::int64_t>& s) {
  std::string t = "[";
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i) t += ", ";
    t += std::to_string(s[i]);
  }
  return t + "]";
}

void print_block(const char* title, const std::string& text) {
  std::printf("%s:\n", title);
  if (text.empty()) std::printf("  (empty)\n");
  std::size_t pos = 0;
  while (pos < text.size()) {
    const auto end = text.find('\n', pos);
    const std::string line = text.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    std::printf("  | %s\n", line.c_str());
    if (end == std::string::npos) break;
    pos = end + 1;
  }
}

// The model the stored config text describes, when that text is a mics model preset
// (inputs/models/*.cfg keys); nullopt for any other text.
std::optional<mics::model::BucketLayout> layout_from_config(const std::string& text, std::string& name) {
  if (text.empty()) return std::nullopt;
  try {
    const auto cfg = mics::model::model_config_from_text(text, "model config");
    name = cfg.name;
    return mics::model::make_layout(cfg);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

void print_info(const ck::Info& in) {
  const auto& m = in.meta;
  std::printf("file             %s (%llu bytes)\n", in.path.c_str(), static_cast<unsigned long long>(in.file_bytes));
  std::printf("format version   %lld\n", static_cast<long long>(m.format_version));
  std::printf("step             %lld\n", static_cast<long long>(m.step));
  std::printf("tokens seen      %lld\n", static_cast<long long>(m.tokens_seen));
  std::printf("written by       W=%d ranks_per_node=%d p=%d strategy=%s hierarchical=%s\n", m.layout.world_size,
              m.layout.ranks_per_node, m.layout.partition_size, m.layout.strategy.c_str(),
              m.layout.hierarchical ? "on" : "off");
  std::printf("schedule        ");
  for (const auto& [k, v] : m.schedule) std::printf(" %s=%.9g", k.c_str(), v);
  std::printf("\nrng state        %zu words; data position %zu words\n", m.rng_state.size(), m.data_position.size());
  for (const auto& [k, v] : m.ints) std::printf("int              %s = %lld\n", k.c_str(), static_cast<long long>(v));
  for (const auto& [k, v] : m.strings) std::printf("string           %s = %s\n", k.c_str(), v.c_str());
  print_block("model config", m.model_config);
  print_block("training config", m.training_config);
  unsigned long long params = 0;
  for (const auto& b : in.layout.buckets) params += b.count;
  std::printf("tensors          %zu in %zu buckets, %llu parameters (model, adam_m, adam_v each)\n",
              in.tensors.size(), in.layout.buckets.size(), params);
  for (const auto& t : in.tensors)
    std::printf("  %-14s %-28s %s\n", t.bucket.c_str(), t.name.c_str(), shape_text(t.shape).c_str());
}
}  // namespace

int main(int argc, char** argv) {
  return mics::run_mpi_program("mics-ckpt", argc, argv, [](int ac, char** av) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    std::vector<std::string> args(av + 1, av + ac);
    if (args.empty()) throw mics::UsageError("no command given (info, verify or export); see --help");
    if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
      if (rank == 0) std::fputs(kUsage, stdout);
      return 0;
    }
    if (args[0] == "--version") {
      if (rank == 0) std::fputs(mics::version_text("mics-ckpt").c_str(), stdout);
      return 0;
    }
    const std::string cmd = args[0];
    std::string path, output, format = "safetensors";
    bool force = false;
    for (std::size_t i = 1; i < args.size(); ++i) {
      if (args[i] == "--output" || args[i] == "-o") {
        if (i + 1 >= args.size()) throw mics::UsageError("--output needs a file name");
        output = args[++i];
      } else if (args[i].rfind("--output=", 0) == 0) {
        output = args[i].substr(9);
      } else if (args[i] == "--format") {
        if (i + 1 >= args.size()) throw mics::UsageError("--format needs safetensors or hf");
        format = args[++i];
      } else if (args[i].rfind("--format=", 0) == 0) {
        format = args[i].substr(9);
      } else if (args[i] == "--force") {
        force = true;
      } else if (!args[i].empty() && args[i][0] == '-') {
        throw mics::UsageError("unknown option '" + args[i] + "'; see --help");
      } else if (path.empty()) {
        path = args[i];
      } else {
        throw mics::UsageError("unexpected argument '" + args[i] + "'; give one FILE or DIR");
      }
    }
    if (cmd != "info" && cmd != "verify" && cmd != "export")
      throw mics::UsageError("unknown command '" + cmd + "' (expected info, verify or export)");
    if (path.empty()) throw mics::UsageError(cmd + " needs a checkpoint FILE or DIR");
    if (cmd != "export" && (!output.empty() || force || format != "safetensors"))
      throw mics::UsageError("--output, --format and --force belong to export");
    if (format != "safetensors" && format != "hf")
      throw mics::UsageError("--format '" + format + "' is not known; choose safetensors or hf");

    if (cmd == "info") {
      const ck::Info in = ck::info(MPI_COMM_WORLD, path);
      if (rank == 0) print_info(in);
      return 0;
    }
    if (cmd == "verify") {
      // Shapes are checked against the layout record in the file and, when the stored
      // model config is a mics preset, against the model that config builds.
      const ck::Info head = ck::info(MPI_COMM_WORLD, path);
      std::string model_name;
      const auto expected = layout_from_config(head.meta.model_config, model_name);
      const ck::VerifyReport rep = ck::verify(MPI_COMM_WORLD, head.path, expected ? &*expected : nullptr);
      if (rank == 0) {
        std::printf("shapes checked against: the stored layout record%s\n",
                    expected ? (" and the stored model config (model '" + model_name + "')").c_str()
                             : " (the stored model config is not a mics model preset)");
        for (const auto& f : rep.faults) std::printf("fault: %s: %s\n", rep.info.path.c_str(), f.c_str());
        if (rep.faults.empty())
          std::printf("ok: %s: step %lld, %zu datasets, %.1f MB checked, checksums and shapes match\n",
                      rep.info.path.c_str(), static_cast<long long>(rep.info.meta.step), rep.datasets_checked,
                      static_cast<double>(rep.bytes_checked) / 1e6);
        std::fflush(stdout);
      }
      if (!rep.faults.empty())
        throw mics::Error(rep.info.path + ": " + std::to_string(rep.faults.size()) + " fault(s), first: " +
                              rep.faults.front(),
                          true);
      return 0;
    }
    if (output.empty()) throw mics::UsageError("export needs --output OUT");
    if (format == "hf") {
      const ck::Info head = ck::info(MPI_COMM_WORLD, path);
      const auto cfg = mics::model::model_config_from_text(head.meta.model_config, head.path);
      if (cfg.variant != mics::model::Variant::gpt)
        throw mics::UsageError(head.path + ": model '" + cfg.name + "' is a BERT encoder; --format hf exports GPT models");
      const auto files = ck::export_hf_gpt2(MPI_COMM_WORLD, head.path, output, static_cast<int>(cfg.heads),
                                            cfg.ln_eps, force);
      if (rank == 0) {
        std::printf("exported %s (step %lld) for Hugging Face GPT2LMHeadModel:", head.path.c_str(),
                    static_cast<long long>(head.meta.step));
        for (const auto& f : files) std::printf(" %s", f.c_str());
        std::printf("\n");
      }
      return 0;
    }
    ck::export_safetensors(MPI_COMM_WORLD, path, output, force);
    if (rank == 0) std::printf("exported the fp32 weights of %s to %s (safetensors)\n", path.c_str(), output.c_str());
    return 0;
  });
}
