// mics-data: makes and inspects token shards.
//   mics-data convert --input a.txt [--input b.txt ...] --output-prefix DIR/name [--val-fraction 0.1]
//   mics-data info FILE [--vocab N]
// No MPI: a plain program, errors as one line "mics-data: error: ..." and exit 1.
#include <boost/program_options.hpp>

#include <cstdio>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "mics/core/error.hpp"
#include "mics/core/version.hpp"
#include "mics/data/token_file.hpp"
#include "mics/data/tokenizer.hpp"

namespace po = boost::program_options;

namespace {

const char* const kUsage =
    "usage: mics-data <command> [options]\n"
    "commands:\n"
    "  convert   text files -> <prefix>_train.bin and <prefix>_val.bin (byte tokens, vocab 256)\n"
    "  info      print a token shard's header and token count, after validating it\n"
    "'mics-data <command> --help' lists the command's options; --version prints the version.\n";

po::variables_map parse(const po::options_description& desc,
                        const po::positional_options_description& pos,
                        const std::vector<std::string>& args) {
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(desc).positional(pos).run(), vm);
    if (vm.count("help") == 0) po::notify(vm);
  } catch (const po::error& e) {
    throw mics::UsageError(e.what());
  }
  return vm;
}

int run_convert(const std::vector<std::string>& args) {
  po::options_description desc(
      "mics-data convert: encode text files byte by byte (token = byte, vocabulary 256;\n"
      "token 0 = end-of-text, put before each file) and split the stream into a training\n"
      "and a validation shard in llm.c's format. Options");
  std::vector<std::string> inputs;
  std::string prefix;
  double val_fraction = 0.1;
  desc.add_options()
      ("help,h", "show this help")
      ("input,i", po::value(&inputs)->required()->composing(),
       "text file; repeat for several documents (concatenated in the order given)")
      ("output-prefix,o", po::value(&prefix)->required(),
       "writes PREFIX_train.bin and PREFIX_val.bin; creates the folder")
      ("val-fraction", po::value(&val_fraction)->default_value(0.1, "0.1"),
       "fraction of tokens, taken from the end, for validation, in [0, 0.5]; 0 writes no val file");
  const po::positional_options_description pos;
  const auto vm = parse(desc, pos, args);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  const auto r = mics::data::convert_text_files(inputs, prefix, val_fraction);
  std::cout << "documents " << r.documents << "\n"
            << "train " << r.train_path << " " << r.train_tokens << " tokens\n";
  if (!r.val_path.empty()) std::cout << "val " << r.val_path << " " << r.val_tokens << " tokens\n";
  return 0;
}

int run_info(const std::vector<std::string>& args) {
  po::options_description desc("mics-data info FILE: validate a token shard and print its header. Options");
  std::string file;
  int vocab = 0;
  desc.add_options()
      ("help,h", "show this help")
      ("file", po::value(&file), "the shard (positional)")
      ("vocab", po::value(&vocab)->default_value(0),
       "also check every token is below this vocabulary size (0: no check)");
  po::positional_options_description pos;
  pos.add("file", 1);
  const auto vm = parse(desc, pos, args);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (file.empty()) throw mics::UsageError("info needs a FILE: mics-data info FILE [--vocab N]");
  if (vocab < 0 || vocab > 65536)
    throw mics::UsageError("--vocab " + std::to_string(vocab) + " must lie in [0, 65536]");
  const auto h = mics::data::read_shard_header(file);
  const mics::data::TokenFile tf(file, vocab);
  int max_token = -1;
  for (const auto t : tf.tokens()) max_token = t > max_token ? t : max_token;
  std::cout << "file " << file << "\n"
            << "magic " << h.magic << "\n"
            << "version " << h.version << "\n"
            << "tokens " << h.token_count << "\n"
            << "bytes " << h.file_bytes << "\n"
            << "max_token " << max_token << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 2) throw mics::UsageError("missing command; expected convert or info (see --help)");
    const std::string cmd = argv[1];
    const std::vector<std::string> rest(argv + 2, argv + argc);
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
      std::cout << kUsage;
      return 0;
    }
    if (cmd == "--version") {
      std::cout << mics::version_text("mics-data");
      return 0;
    }
    if (cmd == "convert") return run_convert(rest);
    if (cmd == "info") return run_info(rest);
    throw mics::UsageError("unknown command '" + cmd + "'; expected convert or info (see --help)");
  } catch (const mics::Error& e) {
    std::cerr << "mics-data: error: " << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "mics-data: error: " << e.what() << "\n";
  }
  return 1;
}
