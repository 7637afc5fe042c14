// float16 tensors through float32 kernels: an op whose native kernel is float32 only (Conv, Gemm,
// the fused ops, the normalizations, ...) runs on float16 inputs by widening them (F16C), running
// the float32 kernel, and rounding its float16 outputs back to nearest even: float32 arithmetic
// and accumulation, float16 storage. The buffers come from the call's scratch, so the session's
// plan sizes them like any kernel's temporaries.
#pragma once

#include <memory>

#include "mopt/kernel.h"

namespace mopt {

// True when `def` has a float32 kernel and is an op for which computing in float32 and rounding
// once is the float16 result (the ops listed in f16_adapter.cc). Such an op runs float16 through
// the adapter even where a plain-C++ float16 kernel exists (MatMul: the adapter reaches the GEMM).
bool f16_via_f32(const OpDef& def);

// The float32 kernel of `def` wrapped for an `init` whose float16 inputs/outputs it converts.
std::unique_ptr<Kernel> make_f16_adapter(const OpDef& def, const KernelInit& init);

}  // namespace mopt
