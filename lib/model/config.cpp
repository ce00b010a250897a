// Presets and overrides, through Boost.Program_options so that a preset file and a
// program's own config file read the same way.
#include "mics/model/config.hpp"

#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>

#include "mics/core/error.hpp"

namespace po = boost::program_options;

namespace mics::model {

const char* variant_name(Variant v) { return v == Variant::gpt ? "gpt" : "bert"; }

namespace {

Variant parse_variant(const std::string& s, const std::string& where) {
  if (s == "gpt") return Variant::gpt;
  if (s == "bert") return Variant::bert;
  throw UsageError(where + ": variant '" + s + "' is not one of gpt, bert");
}

struct ShapeKey {
  const char* key;
  std::int64_t ModelConfig::*field;
};
constexpr ShapeKey kShapeKeys[] = {{"layers", &ModelConfig::layers},
                                   {"hidden", &ModelConfig::hidden},
                                   {"heads", &ModelConfig::heads},
                                   {"seq", &ModelConfig::seq},
                                   {"vocab", &ModelConfig::vocab}};

// Program_options would accept "-3" into an unsigned type by wrapping it, so sizes are
// read as signed integers and checked here.
void add_shape_options(po::options_description& d, bool for_command_line) {
  d.add_options()(for_command_line ? "variant" : "variant", po::value<std::string>(),
                  "model variant: gpt (causal decoder) or bert (masked encoder)");
  d.add_options()("layers", po::value<std::int64_t>(), "transformer blocks")
                 ("hidden", po::value<std::int64_t>(), "hidden size (divisible by heads)")
                 ("heads", po::value<std::int64_t>(), "attention heads")
                 ("seq", po::value<std::int64_t>(), "sequence length")
                 ("vocab", po::value<std::int64_t>(), "vocabulary size");
}

// Applies whatever shape values vm holds onto c.
void apply(const po::variables_map& vm, ModelConfig& c, const std::string& where) {
  if (vm.count("variant")) c.variant = parse_variant(vm["variant"].as<std::string>(), where);
  for (const auto& k : kShapeKeys)
    if (vm.count(k.key)) c.*(k.field) = vm[k.key].as<std::int64_t>();
}

}  // namespace

void ModelConfig::validate(const std::string& where) const {
  for (const auto& k : kShapeKeys) {
    const std::int64_t v = this->*(k.field);
    if (v < 0)
      throw UsageError(where + ": " + k.key + " = " + std::to_string(v) +
                       " is negative; sizes must be positive integers");
    if (v == 0)
      throw UsageError(where + ": " + k.key + " = 0; it must be at least 1");
  }
  if (hidden % heads != 0)
    throw UsageError(where + ": heads = " + std::to_string(heads) +
                     " does not divide hidden = " + std::to_string(hidden));
  if (vocab < 2)
    throw UsageError(where + ": vocab = " + std::to_string(vocab) +
                     "; it must be at least 2 (BERT reserves the last id as the mask token)");
  if (vocab > std::numeric_limits<std::int32_t>::max())
    throw UsageError(where + ": vocab = " + std::to_string(vocab) +
                     " does not fit the int32 token ids");
  if (!(ln_eps > 0))
    throw UsageError(where + ": ln_eps must be positive");
}

ModelConfig load_model_config(const std::string& path) {
  const std::string where = "model preset " + path;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    throw UsageError(where + ": no such file");
  if (std::filesystem::is_directory(path, ec))
    throw UsageError(where + ": is a directory, not a preset file");
  std::ifstream in(path);
  if (!in) throw UsageError(where + ": cannot be read (permissions?)");

  po::options_description d;
  d.add_options()("name", po::value<std::string>(), "preset name");
  add_shape_options(d, false);
  po::variables_map vm;
  try {
    po::store(po::parse_config_file(in, d, /*allow_unregistered=*/false), vm);
    po::notify(vm);
  } catch (const po::unknown_option& e) {
    throw UsageError(where + ": unknown key '" + e.get_option_name() +
                     "'; known keys: name, variant, layers, hidden, heads, seq, vocab");
  } catch (const po::invalid_option_value& e) {
    throw UsageError(where + ": " + e.what() + "; sizes must be positive integers");
  } catch (const po::error& e) {
    // Program_options' own messages are one line and name the key and the value.
    throw UsageError(where + ": " + e.what());
  }
  if (!vm.count("variant")) throw UsageError(where + ": key 'variant' is missing");
  for (const auto& k : kShapeKeys)
    if (!vm.count(k.key)) throw UsageError(where + ": key '" + std::string(k.key) + "' is missing");

  ModelConfig c;
  c.name = vm.count("name") ? vm["name"].as<std::string>()
                            : std::filesystem::path(path).stem().string();
  apply(vm, c, where);
  c.validate(where);
  return c;
}

void add_model_options(po::options_description& desc) {
  desc.add_options()("model", po::value<std::string>(),
                     "model preset file (inputs/models/*.cfg); the shape options below "
                     "override its values");
  add_shape_options(desc, true);
}

ModelConfig model_config_from_variables(const po::variables_map& vm) {
  ModelConfig c;
  std::string where = "model";
  if (vm.count("model")) {
    c = load_model_config(vm["model"].as<std::string>());
    where = "model " + c.name + " with command-line overrides";
  } else {
    for (const auto& k : kShapeKeys)
      if (!vm.count(k.key))
        throw UsageError(std::string("model: no --model preset and no --") + k.key +
                         "; give a preset or every shape option");
  }
  apply(vm, c, where);
  c.validate(where);
  return c;
}

}  // namespace mics::model
