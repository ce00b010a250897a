// mics-generate: sample text from a trained GPT checkpoint (any layout wrote it).
//   mics-generate CHECKPOINT [--prompt TEXT | --prompt-ids IDS | --prompt-file FILE]
//                 [--tokens N] [--temperature T] [--top-k K] [--seed S] [--backend cpu|cuda]
// One process; the same seed, prompt and checkpoint give the same tokens.
#include <boost/program_options.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "mics/checkpoint/checkpoint.hpp"
#include "mics/core/error.hpp"
#include "mics/core/mpi_env.hpp"
#include "mics/core/version.hpp"
#include "mics/data/tokenizer.hpp"
#include "mics/device/backend.hpp"
#include "mics/model/generate.hpp"

namespace po = boost::program_options;
using mics::UsageError;

namespace {

struct Request {
  std::string checkpoint, prompt, prompt_ids, prompt_file, output = "text", logits_file, backend = "cpu";
  int tokens = 256, top_k = 0, threads = 0, device = 0;
  double temperature = 1.0;
  std::uint64_t seed = 1234;
  bool echo = true;
};

po::options_description options(Request& r) {
  po::options_description d(
      "mics-generate: sample text from a GPT checkpoint written by mics-train (any layout)\n\n"
      "usage: mics-generate CHECKPOINT [options]    (CHECKPOINT: a step_*.h5 file or its folder)\n\n"
      "Options");
  d.add_options()
    ("help,h", "print this help and exit")
    ("version", "print the version and exit")
    ("checkpoint", po::value(&r.checkpoint), "the checkpoint (also the first positional argument)")
    ("prompt", po::value(&r.prompt), "prompt text, encoded byte by byte (mics-data's tokenizer)")
    ("prompt-ids", po::value(&r.prompt_ids), "prompt as token ids, separated by spaces or commas")
    ("prompt-file", po::value(&r.prompt_file), "prompt text read from FILE")
    ("tokens,n", po::value(&r.tokens)->default_value(256), "new tokens to generate")
    ("temperature,t", po::value(&r.temperature)->default_value(1.0, "1.0"),
     "softmax temperature; 0 picks the most likely token (greedy)")
    ("top-k,k", po::value(&r.top_k)->default_value(0), "draw only from the K most likely tokens (0: all)")
    ("seed", po::value(&r.seed)->default_value(1234), "seed of the draws (same seed, same text)")
    ("output", po::value(&r.output)->default_value("text"), "text (decoded bytes) or ids (token ids)")
    ("echo", po::value(&r.echo)->default_value(true), "print the prompt before the new text (text output)")
    ("logits", po::value(&r.logits_file),
     "also write the prompt's logits to FILE: float32 little-endian, [prompt tokens, vocab] row-major")
    ("backend", po::value(&r.backend)->default_value("cpu"), "cpu or cuda")
    ("threads", po::value(&r.threads)->default_value(0), "CPU threads (0: OMP_NUM_THREADS or all)")
    ("device", po::value(&r.device)->default_value(0), "GPU ordinal for --backend cuda");
  return d;
}

std::vector<std::int32_t> parse_ids(const std::string& text) {
  std::string s = text;
  for (char& c : s)
    if (c == ',') c = ' ';
  std::istringstream is(s);
  std::vector<std::int32_t> ids;
  std::string word;
  while (is >> word) {
    std::size_t used = 0;
    long v = -1;
    try {
      v = std::stol(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size() || v < 0 || v > 0x7fffffff)
      throw UsageError("--prompt-ids: '" + word + "' is not a token id (a non-negative integer)");
    ids.push_back(static_cast<std::int32_t>(v));
  }
  if (ids.empty()) throw UsageError("--prompt-ids is empty; give at least one token id");
  return ids;
}

std::vector<std::int32_t> prompt_tokens(const Request& r, std::int64_t vocab) {
  const int given = static_cast<int>(!r.prompt.empty()) + static_cast<int>(!r.prompt_ids.empty()) +
                    static_cast<int>(!r.prompt_file.empty());
  if (given > 1) throw UsageError("give one of --prompt, --prompt-ids and --prompt-file");
  std::vector<std::int32_t> ids;
  std::string text = r.prompt;
  if (!r.prompt_file.empty()) {
    std::ifstream in(r.prompt_file, std::ios::binary);
    if (!in) throw UsageError("--prompt-file " + r.prompt_file + ": cannot read it; check the path");
    std::ostringstream os;
    os << in.rdbuf();
    text = os.str();
    if (text.empty()) throw UsageError("--prompt-file " + r.prompt_file + ": the file is empty");
  }
  if (!r.prompt_ids.empty()) ids = parse_ids(r.prompt_ids);
  else if (!text.empty())
    for (auto t : mics::data::encode_bytes(text)) ids.push_back(t);
  else
    ids.push_back(mics::data::kEndOfText);  // no prompt: start a new document
  for (std::size_t i = 0; i < ids.size(); ++i)
    if (ids[i] >= vocab)
      throw UsageError("prompt token " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                       " is outside the model's vocabulary [0, " + std::to_string(vocab) + ")");
  return ids;
}

void check(const Request& r) {
  if (r.checkpoint.empty()) throw UsageError("no checkpoint given; usage: mics-generate CHECKPOINT [options]");
  if (r.tokens < 0) throw UsageError("--tokens " + std::to_string(r.tokens) + " must not be negative");
  if (!(r.temperature >= 0)) throw UsageError("--temperature must be 0 (greedy) or positive");
  if (r.top_k < 0) throw UsageError("--top-k " + std::to_string(r.top_k) + " must be 0 (all) or positive");
  if (r.output != "text" && r.output != "ids") throw UsageError("--output '" + r.output + "' is not known; choose text or ids");
  if (r.backend != "cpu" && r.backend != "cuda")
    throw UsageError("--backend '" + r.backend + "' is not known; choose cpu or cuda");
}

void print_text(const std::vector<std::int32_t>& ids) {
  std::vector<std::uint16_t> bytes(ids.begin(), ids.end());
  const std::string s = mics::data::decode_bytes(bytes);
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

void write_logits(const std::string& path, const std::vector<float>& logits) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(logits.data()), static_cast<std::streamsize>(logits.size() * sizeof(float)));
  if (!out) throw UsageError("--logits " + path + ": cannot write it; check the folder");
}

int generate(const Request& r) {
  const mics::checkpoint::Weights w = mics::checkpoint::read_weights(MPI_COMM_SELF, r.checkpoint);
  const mics::model::ModelConfig cfg = mics::model::model_config_from_text(w.info.meta.model_config, w.info.path);
  if (r.top_k > cfg.vocab)
    throw UsageError("--top-k " + std::to_string(r.top_k) + " exceeds the vocabulary (" + std::to_string(cfg.vocab) + ")");
  const std::vector<std::int32_t> prompt = prompt_tokens(r, cfg.vocab);
  auto backend = mics::device::make_backend(r.backend, r.threads, r.device);
  mics::model::Generator gen(cfg, *backend, w.buckets);
  if (!r.logits_file.empty()) {
    if (prompt.size() > static_cast<std::size_t>(cfg.seq))
      throw UsageError("--logits: the prompt has " + std::to_string(prompt.size()) + " tokens, more than the model's " +
                       std::to_string(cfg.seq) + " positions");
    write_logits(r.logits_file, gen.logits(prompt));
  }
  const bool text = r.output == "text";
  if (text && r.echo) print_text(prompt);
  std::vector<std::int32_t> fresh = gen.generate(prompt, r.tokens, {r.temperature, r.top_k}, r.seed,
                                                 [&](std::int32_t t) {
                                                   if (text) print_text({t});
                                                 });
  if (text) {
    std::printf("\n");
  } else {
    for (std::size_t i = 0; i < fresh.size(); ++i) std::printf("%s%d", i ? " " : "", fresh[i]);
    std::printf("\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return mics::run_mpi_program("mics-generate", argc, argv, [](int ac, char** av) {
    int world = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    if (world != 1)
      throw UsageError("mics-generate runs as one process (started as " + std::to_string(world) +
                       " ranks); run it without mpirun");
    Request r;
    const po::options_description desc = options(r);
    po::positional_options_description pos;
    pos.add("checkpoint", 1);
    po::variables_map vm;
    try {
      po::store(po::command_line_parser(ac, av).options(desc).positional(pos).run(), vm);
      po::notify(vm);
    } catch (const po::error& e) {
      throw UsageError(std::string(e.what()) + "; see mics-generate --help");
    }
    if (vm.count("help")) {
      std::ostringstream os;
      os << desc;
      std::fputs(os.str().c_str(), stdout);
      return 0;
    }
    if (vm.count("version")) {
      std::fputs(mics::version_text("mics-generate").c_str(), stdout);
      return 0;
    }
    check(r);
    return generate(r);
  });
}
