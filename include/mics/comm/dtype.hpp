#pragma once
// Element types the collectives move. The same enum as the device backends'
// (mics::device::DType: f32, f64, bf16), so the engine passes one value to both.
#include "mics/device/dtype.hpp"

namespace mics::comm {

using mics::device::DType;
using mics::device::dtype_name;
using mics::device::dtype_size;

}  // namespace mics::comm
