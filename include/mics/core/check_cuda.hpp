#pragma once
// Check macros for CUDA runtime, NCCL and cuBLAS calls, in the manner of MICS_CHECK_MPI:
// on failure they throw mics::Error naming the call, file, line and world rank, the
// library's own description, and a hint. Header-only so that mics_core never needs CUDA;
// include it only from code built with MICS_HAVE_CUDA.
#include <cublas_api.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <string>

#include "mics/core/check.hpp"

#define MICS_CHECK_CUDA(call)                                                                  \
  do {                                                                                         \
    const cudaError_t mics_cuda_rc_ = (call);                                                  \
    if (mics_cuda_rc_ != cudaSuccess)                                                          \
      ::mics::detail::throw_call_failure(                                                      \
          "CUDA", #call,                                                                       \
          std::string(cudaGetErrorName(mics_cuda_rc_)) + ": " + cudaGetErrorString(mics_cuda_rc_), \
          __FILE__, __LINE__,                                                                  \
          "check that a GPU is visible (nvidia-smi, CUDA_VISIBLE_DEVICES) and has free memory"); \
  } while (0)

#define MICS_CHECK_NCCL(call)                                                                  \
  do {                                                                                         \
    const ncclResult_t mics_nccl_rc_ = (call);                                                 \
    if (mics_nccl_rc_ != ncclSuccess)                                                          \
      ::mics::detail::throw_call_failure(                                                      \
          "NCCL", #call, ncclGetErrorString(mics_nccl_rc_), __FILE__, __LINE__,                \
          "NCCL needs one GPU per rank; rerun with NCCL_DEBUG=WARN for the reason");           \
  } while (0)

#define MICS_CHECK_CUBLAS(call)                                                                \
  do {                                                                                         \
    const cublasStatus_t mics_cublas_rc_ = (call);                                             \
    if (mics_cublas_rc_ != CUBLAS_STATUS_SUCCESS)                                              \
      ::mics::detail::throw_call_failure(                                                      \
          "cuBLAS", #call,                                                                     \
          std::string(cublasGetStatusName(mics_cublas_rc_)) + ": " +                           \
              cublasGetStatusString(mics_cublas_rc_),                                          \
          __FILE__, __LINE__,                                                                  \
          "NOT_INITIALIZED usually means no usable GPU; check shapes and the compute type otherwise"); \
  } while (0)
