// What the host CPU can run, detected once, and the ISA tier the runtime dispatches to.
#pragma once

#include <string>
#include <vector>

namespace mopt {

// Tiers in dispatch order. x86: scalar < avx2 < avx512; ARM: scalar < neon.
enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kNeon = 3 };

const char* isa_name(Isa isa);
bool parse_isa(const std::string& name, Isa* out);  // "scalar" | "avx2" | "avx512" | "neon"

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false;
  bool avx512vnni = false, avx512bf16 = false, avx_vnni = false;
  bool neon = false;
  int logical_cores = 1;
};

const CpuFeatures& cpu_features();           // CPUID + XCR0 (x86) / getauxval (ARM), once
bool isa_supported(Isa isa);                 // compiled into this build AND runnable on this host
Isa host_isa();                              // the best supported tier
Isa default_isa();                           // host_isa() capped by the MOPT_ISA environment variable
std::vector<Isa> available_isas();           // every supported tier, lowest first
bool isa_allows(Isa cap, Isa row);
// The core clock, measured by timing a chain of dependent integer adds (one per cycle); 0 where
// that cannot be done (not x86-64).
double measure_clock_hz(double seconds);           // a kernel row of ISA `row` may run under cap `cap`

}  // namespace mopt
