#pragma once
// Dense (no sparsity) bf16/fp16 tensor-core peaks, for MFU. Figures are the vendors'
// data-sheet numbers: V100 SXM2 125 (PCIe 112), A100 312, H100 SXM 989 (PCIe 756,
// NVL 835), H200 989 (NVL 835), GH200 989. A CPU has no entry: its peak depends on cores,
// clocks and vector units, so MFU on a CPU needs the user's --peak-tflops.
#include <optional>
#include <string_view>

namespace mics::report {

// Peak TFLOPS for a device name as CUDA reports it ("NVIDIA H100 80GB HBM3",
// "NVIDIA A100-SXM4-40GB", "Tesla V100-PCIE-16GB"), matched case-insensitively; nullopt
// for anything else, "cpu" included.
std::optional<double> device_peak_tflops(std::string_view device_name);

// The user's --peak-tflops when given (must be > 0, else mics::UsageError), otherwise the
// table's entry for the device.
std::optional<double> resolve_peak_tflops(std::string_view device_name,
                                          std::optional<double> user_peak_tflops);

}  // namespace mics::report
