#include <chrono>
#include "mopt/cpu_features.h"

#include <cstdlib>
#include <thread>

#include "mopt/status.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define MOPT_X86 1
#elif defined(__aarch64__)
#define MOPT_ARM64 1
#endif

namespace mopt {

namespace {

#ifdef MOPT_X86
uint64_t read_xcr0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
  unsigned hw = std::thread::hardware_concurrency();
  f.logical_cores = hw ? static_cast<int>(hw) : 1;
#ifdef MOPT_X86
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  bool osxsave = (c >> 27) & 1;
  bool avx = (c >> 28) & 1;
  f.fma = (c >> 12) & 1;
  f.f16c = (c >> 29) & 1;
  uint64_t xcr0 = osxsave ? read_xcr0() : 0;
  bool ymm_os = (xcr0 & 0x6) == 0x6;             // SSE and AVX state saved by the OS
  bool zmm_os = (xcr0 & 0xE6) == 0xE6;           // plus opmask and upper ZMM state
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2 = avx && ymm_os && ((b >> 5) & 1);
    f.avx512f = zmm_os && ((b >> 16) & 1);
    f.avx512dq = zmm_os && ((b >> 17) & 1);
    f.avx512bw = zmm_os && ((b >> 30) & 1);
    f.avx512vl = zmm_os && ((b >> 31) & 1);
    f.avx512vnni = zmm_os && ((c >> 11) & 1);
  }
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) {
    f.avx_vnni = ymm_os && ((a >> 4) & 1);
    f.avx512bf16 = zmm_os && ((a >> 5) & 1);
  }
  f.fma = f.fma && ymm_os;
  f.f16c = f.f16c && ymm_os;
#endif
#ifdef MOPT_ARM64
  f.neon = true;
#endif
  return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    case Isa::kNeon: return "neon";
  }
  return "unknown";
}

bool parse_isa(const std::string& name, Isa* out) {
  if (name == "scalar") *out = Isa::kScalar;
  else if (name == "avx2") *out = Isa::kAvx2;
  else if (name == "avx512") *out = Isa::kAvx512;
  else if (name == "neon") *out = Isa::kNeon;
  else return false;
  return true;
}

bool isa_supported(Isa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::kScalar: return true;
    case Isa::kAvx2:
#ifdef MOPT_HAVE_AVX2
      return f.avx2 && f.fma && f.f16c;
#else
      return false;
#endif
    case Isa::kAvx512:
#ifdef MOPT_HAVE_AVX512
      return f.avx2 && f.fma && f.f16c && f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl;
#else
      return false;
#endif
    case Isa::kNeon:
#ifdef MOPT_HAVE_NEON
      return f.neon;
#else
      return false;
#endif
  }
  return false;
}

std::vector<Isa> available_isas() {
  std::vector<Isa> out;
  for (Isa i : {Isa::kScalar, Isa::kNeon, Isa::kAvx2, Isa::kAvx512})
    if (isa_supported(i)) out.push_back(i);
  return out;
}

Isa host_isa() { return available_isas().back(); }

Isa default_isa() {
  Isa best = host_isa();
  const char* env = std::getenv("MOPT_ISA");
  if (!env || !*env) return best;
  Isa want;
  if (!parse_isa(env, &want))
    fail(ErrorCode::kInvalidArgument, "MOPT_ISA='", env, "' is not one of scalar, avx2, avx512, neon");
  if (!isa_supported(want))
    fail(ErrorCode::kInvalidArgument, "MOPT_ISA='", env, "' is not supported on this machine (best: ",
         isa_name(best), ")");
  return want;
}

bool isa_allows(Isa cap, Isa row) {
  if (row == Isa::kScalar) return true;
  if (row == Isa::kNeon) return cap == Isa::kNeon;
  if (cap == Isa::kNeon) return false;
  return static_cast<int>(row) <= static_cast<int>(cap);
}

double measure_clock_hz(double seconds) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  auto chain = [](int64_t iters) {
    uint64_t x = 0;
    for (int64_t i = 0; i < iters; ++i)
      asm volatile(
          "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
          "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
          "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
          "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0"
          : "+r"(x));
    return x;
  };
  chain(1 << 16);
  int64_t iters = 1 << 16;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    const uint64_t adds = chain(iters);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (dt >= seconds || iters > (int64_t(1) << 36)) return dt > 0 ? static_cast<double>(adds) / dt : 0.0;
    iters *= 2;
  }
#else
  (void)seconds;
  return 0.0;
#endif
}

}  // namespace mopt
