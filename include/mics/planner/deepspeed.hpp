#pragma once
// The MiCS paper's baseline: ZeRO-2 and ZeRO-3 as DeepSpeed 0.5.6 scheduled them, replayed
// for the same model, cluster and batch as this engine's layouts (mics-plan --baseline
// deepspeed-0.5.6). What it models, read from DeepSpeed's sources at tag v0.5.6
// (deepspeed/runtime/zero/stage3.py, partition_parameters.py, stage2.py, constants.py):
//
// ZeRO-3
//  - parameters are fetched per sub-module (each Linear, LayerNorm, embedding) and the
//    fetch blocks: the coordinator waits on its handles and calls torch.cuda.synchronize(),
//    which also waits for the gradient reductions in flight on the reduction stream;
//  - one NCCL all-gather per parameter tensor, in the 2-byte compute type;
//  - tensors under stage3_param_persistence_threshold (1e5 elements) stay gathered within
//    a micro-step, but _partition_all_parameters releases them with the rest after every
//    backward (release_and_reset_parameter, stage3.py lines 503-510, makes no exception):
//    every micro-step but the first after a step gathers each again on first use, and
//    _post_step (lines 2764-2766) gathers them all again after the optimizer, exposed;
//  - every fetch evaluates a debug f-string holding param.norm() of each of the
//    sub-module's own parameters (line 456), printed or not: a read of the gathered
//    tensors on the compute stream at every run of every sub-module;
//  - after a fetch, when nothing is in flight, the next tensors in trace order are
//    prefetched until stage3_prefetch_bucket_size (5e7 elements) is reached; launching
//    each fills its gather buffer with torch.zeros on the compute stream and calls
//    torch.cuda.synchronize() (partition_parameters.py lines 870-878), so only the last
//    overlaps compute;
//  - gradients are reduce-scattered one tensor at a time, in buckets of
//    reduce_bucket_size (5e8 elements), on a second stream, every micro-step, through
//    torch.distributed.reduce_scatter's list form, which PyTorch's ProcessGroupNCCL
//    serves by copying each of the W input slices into one flat buffer first: W copies
//    on the communication stream per tensor (ds_flatten_seconds); each bucket is first
//    divided by W in place on that stream (average_tensor, stage3.py lines 1995-1996);
//  - contiguous_gradients (on by default, constants.py line 65): the backward hook copies
//    each gradient into the bucket on the compute stream (stage3.py lines 1947-1953),
//    unless the tensor is larger than the bucket;
//  - after a sub-module runs, its tensors stay gathered only when the same sub-module runs
//    again in this micro-step with fewer than stage3_max_reuse_distance (1e9) elements of
//    sub-modules (repeats counted) in between (stage3.py _keep_for_later, lines 512-520;
//    _distance_in_numel, lines 283-291); so with activation checkpointing a block's
//    recomputed forward gathers it again, and its backward gathers again whatever is
//    further than that from its recomputation (at width 10240: qkv and the attention
//    output, 18 h^2 and 16 h^2 elements away; fc_1 and fc_2 stay). A small model keeps
//    every tensor from the forward on. Everything is released after each backward
//    (_partition_all_parameters, line 2988);
//  - nothing is prefetched while stage3_max_live_parameters (1e9) elements or more are
//    gathered or in flight (prefetch_next_sub_modules, line 356);
// ZeRO-2
//  - overlap_comm is off by default: each gradient bucket (5e8 elements) is reduced on
//    the compute stream, every micro-step, as one NCCL reduce per owning rank, after
//    each gradient is copied into it (contiguous_gradients, stage2.py lines 808-815) and
//    it is divided by W in place (line 929), both on the compute stream;
//  - after the optimizer step the 2-byte parameters are all-gathered in shards of
//    allgather_bucket_size (5e8 elements), exposed.
// All collectives are over one communicator (the world), priced by collective_cost.hpp,
// and share one queue. These are a model's estimates, not measurements.
#include "mics/planner/cluster.hpp"
#include "mics/planner/predict.hpp"

namespace mics::planner {

// DeepSpeed 0.5.6's defaults, in elements (deepspeed/runtime/zero/constants.py).
constexpr double kDsPrefetchBucket = 5e7;
constexpr double kDsReduceBucket = 5e8;
constexpr double kDsAllgatherBucket = 5e8;
constexpr double kDsPersistenceThreshold = 1e5;
constexpr double kDsMaxLiveParameters = 1e9;  // stage3_max_live_parameters, constants.py line 99
constexpr double kDsMaxReuseDistance = 1e9;   // stage3_max_reuse_distance, constants.py line 103
// Seconds per short copy kernel launched back to back: NVIDIA's "Getting Started with CUDA
// Graphs" (developer.nvidia.com/blog/cuda-graphs, 2019) measures 3.8 us per short kernel
// including its launch overhead.
constexpr double kDsCopyLaunch = 3.8e-6;

// One reduce-scatter's flattening in PyTorch's ProcessGroupNCCL::reduce_scatter (the list
// form DeepSpeed 0.5.6 calls, partition_parameters.py line 1110): before the collective,
// on the communication stream, each of the W input slices is copied into one flat buffer
// (torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp, reduce_scatter's pre-processing
// copies). W kernels, each the longer of its launch (kDsCopyLaunch) and its bytes read
// and written at the device's memory bandwidth.
double ds_flatten_seconds(const Cluster& c, int world, double bytes);

struct BaselineTimes {
  double step_s = 0, compute_s = 0, optimizer_s = 0;
  double comm_s = 0, exposed_s = 0;  // all of it is the partition group's (p = W)
};

// zero2 and zero3 layouts only (p = W); `accumulation` micro-steps, each reducing.
BaselineTimes deepspeed_056_step(const Cluster& c, const Workload& w, const Layout& l, int accumulation);

}  // namespace mics::planner
