#include "mics/core/error.hpp"
#include "mics/train/tools.hpp"

namespace po = boost::program_options;

namespace mics::train {

po::options_description tool_options() {
  po::options_description d("Evaluation and samples");
  d.add_options()
    ("eval-only", po::value<bool>()->default_value(false)->implicit_value(true),
     "with --resume: print the checkpoint's validation loss and perplexity (any layout) and "
     "exit; neither --checkpoint-dir nor --metrics is touched")
    ("eval-output", po::value<std::string>()->default_value(""),
     "with --eval-only: also append the result to FILE as one JSON line")
    ("sample-every", po::value<int>()->default_value(0),
     "every N steps rank 0 prints a sample drawn from the current weights (0: never; GPT only)")
    ("sample-tokens", po::value<int>()->default_value(128), "tokens per sample")
    ("sample-prompt", po::value<std::string>()->default_value(""),
     "text the samples continue (default: the start of a new document)")
    ("sample-temperature", po::value<double>()->default_value(1.0, "1.0"),
     "softmax temperature of the samples (0: greedy)");
  return d;
}

void read_tool_options(const po::variables_map& vm, RunOptions& o) {
  auto fail_if = [](bool bad, const std::string& m) {
    if (bad) throw UsageError(m);
  };
  o.eval_only = vm["eval-only"].as<bool>();
  o.eval_output = vm["eval-output"].as<std::string>();
  o.sample_every = vm["sample-every"].as<int>();
  o.sample_tokens = vm["sample-tokens"].as<int>();
  o.sample_prompt = vm["sample-prompt"].as<std::string>();
  o.sample_temperature = vm["sample-temperature"].as<double>();
  fail_if(o.eval_only && o.resume.empty(),
          "--eval-only needs --resume FILE|DIR|latest: the checkpoint to evaluate");
  fail_if(!o.eval_output.empty() && !o.eval_only, "--eval-output belongs to --eval-only");
  fail_if(o.sample_every < 0, "--sample-every must not be negative");
  fail_if(o.sample_tokens < 1, "--sample-tokens must be at least 1");
  fail_if(!(o.sample_temperature >= 0), "--sample-temperature must be 0 (greedy) or positive");
  fail_if(o.sample_every > 0 && o.model.variant != model::Variant::gpt,
          "--sample-every needs a GPT model; " + o.model.name + " is a BERT encoder");
}

}  // namespace mics::train
