#pragma once
// Transformer shapes, their presets (inputs/models/*.cfg) and their command-line overrides.
// A ModelConfig is a few integers: describing a 175B model, its bucket layout, parameter
// count and FLOPs allocates nothing of the model itself.
#include <cstdint>
#include <ostream>
#include <string>

#include <boost/program_options.hpp>

namespace mics::model {

enum class Variant {
  gpt,   // decoder: causal attention, next-token objective
  bert,  // encoder: bidirectional attention, masked-token objective (see masking.hpp)
};

const char* variant_name(Variant v);
inline std::ostream& operator<<(std::ostream& os, Variant v) { return os << variant_name(v); }

struct ModelConfig {
  std::string name = "custom";
  Variant variant = Variant::gpt;
  std::int64_t layers = 0;   // transformer blocks, l
  std::int64_t hidden = 0;   // model width, h (C in kernel comments)
  std::int64_t heads = 0;    // attention heads; must divide hidden
  std::int64_t seq = 0;      // sequence length s (also the number of learned positions)
  std::int64_t vocab = 0;    // V; token ids are int32 in [0, V)
  double ln_eps = 1e-5;

  std::int64_t head_size() const { return hidden / heads; }
  bool causal() const { return variant == Variant::gpt; }
  // Throws mics::UsageError with one line naming the value and the rule it breaks
  // (`where` prefixes the message, e.g. the preset file).
  void validate(const std::string& where = "model") const;
};

// Reads a preset: a Boost.Program_options config file with the keys
//   name (optional, defaults to the file's stem), variant = gpt|bert, layers, hidden,
//   heads, seq, vocab
// and validates it. Missing or unreadable file, unknown or missing key, non-integer or
// non-positive size, heads not dividing hidden: mics::UsageError naming file and value.
ModelConfig load_model_config(const std::string& path);

// Options for programs that take a model: --model FILE (a preset) and overrides
// --variant, --layers, --hidden, --heads, --seq, --vocab (each replaces the preset's value).
void add_model_options(boost::program_options::options_description& desc);

// The model those options describe: the preset with its overrides applied, validated.
// Without --model every shape option must be given (UsageError naming the first missing).
ModelConfig model_config_from_variables(const boost::program_options::variables_map& vm);

}  // namespace mics::model
