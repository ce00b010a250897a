// mics-train: parse the options, run the training job (lib/train).
#include "mics/train/training_run.hpp"

int main(int argc, char** argv) { return mics::train::train_main(argc, argv); }
