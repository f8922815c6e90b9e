// The capability levels (capability.h): detection and the environment
// variable. The ops that show and set the level are in capability_op.cpp.
#include "capability.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <cstdlib>

namespace torchconv {
namespace cpu {
namespace {

constexpr const char* kNames[] = {"default", "avx2", "avx512", "avx512_bf16"};
constexpr int kLevels = sizeof(kNames) / sizeof(kNames[0]);
constexpr const char* kExpected = "(expected one of default, avx2, avx512, avx512_bf16)";

// The level called `name`, or -1 for a name that is none of kNames.
int level_named(const std::string& name) {
  for (int level = 0; level < kLevels; ++level)
    if (name == kNames[level]) return level;
  return -1;
}

Capability detect() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  // What gemm_avx512.cpp is compiled for: F, BW, DQ, VL (and FMA).
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  const bool bf16 = avx512 && __builtin_cpu_supports("avx512bf16");
  if (bf16) return Capability::AVX512_BF16;
  if (avx512) return Capability::AVX512;
  if (avx2) return Capability::AVX2;
#endif
  return Capability::Default;
}

// TORCHCONV_CPU_CAPABILITY lowers the CPU's level; an unknown name, or one
// above what the CPU has, is ignored with a warning (as ATen ignores an
// invalid ATEN_CPU_CAPABILITY) rather than failing the import.
Capability initial_capability() {
  const Capability cpu = cpu_capability();
  const char* requested = std::getenv("TORCHCONV_CPU_CAPABILITY");
  if (requested == nullptr || *requested == '\0') return cpu;
  const int level = level_named(requested);
  if (level > static_cast<int>(cpu)) {
    TORCH_WARN("torchconv: ignoring TORCHCONV_CPU_CAPABILITY=", requested, ": this CPU's highest level is ",
               capability_name(cpu));
    return cpu;
  }
  if (level >= 0) return static_cast<Capability>(level);
  TORCH_WARN("torchconv: ignoring invalid value for TORCHCONV_CPU_CAPABILITY: ", requested, " ", kExpected);
  return cpu;
}

std::atomic<int>& level_in_use() {
  static std::atomic<int> level{static_cast<int>(initial_capability())};
  return level;
}

}  // namespace

Capability cpu_capability() {
  static const Capability detected = detect();
  return detected;
}

Capability capability() { return static_cast<Capability>(level_in_use().load(std::memory_order_relaxed)); }

void set_capability(Capability level) {
  TORCH_CHECK(level <= cpu_capability(), "torchconv: this CPU cannot run capability level ", capability_name(level),
              " (its highest is ", capability_name(cpu_capability()), ")");
  level_in_use().store(static_cast<int>(level), std::memory_order_relaxed);
}

const char* capability_name(Capability level) { return kNames[static_cast<int>(level)]; }

Capability parse_capability(const std::string& name) {
  const int level = level_named(name);
  TORCH_CHECK(level >= 0, "torchconv: unknown capability level '", name, "' ", kExpected);
  return static_cast<Capability>(level);
}

std::vector<std::string> supported_capabilities() {
  std::vector<std::string> names;
  for (int level = 0; level <= static_cast<int>(cpu_capability()); ++level) names.emplace_back(kNames[level]);
  return names;
}

}  // namespace cpu
}  // namespace torchconv
