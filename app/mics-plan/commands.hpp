#pragma once
// mics-plan's three modes; each parses its own options and returns the exit status.
#include <boost/program_options.hpp>

#include "mics/model/config.hpp"

namespace mics_plan {

// Parameters, buckets, FLOPs and model-state bytes (always printed first).
void describe_model(const mics::model::ModelConfig& c, long long partition_size);
// Rejects models whose size would make the arithmetic meaningless (one line each).
void check_model_size(const mics::model::ModelConfig& c);

int predict_command(const boost::program_options::variables_map& vm, const mics::model::ModelConfig& c);
void add_predict_options(boost::program_options::options_description& desc);

int calibrate_command(int argc, char** argv);

}  // namespace mics_plan
