// Peak multiply-accumulates per second of one core for each precision's instruction, the bound
// under every convolution kernel oneDNN can pick on this CPU: fp32 VFMADD231PS (16 MACs per
// zmm instruction), bf16 VDPBF16PS (32) and int8 VPDPBUSD (64, AVX-512 VNNI). 12 independent
// accumulators per loop, enough to hide each instruction's latency, so the loop measures
// throughput. The ratios bf16/fp32 and int8/fp32 (counter `mac_per_s`, compare the three rows of
// one run) bound what `boards.precision` can gain over fp32 in compute (issue 13); AMX, which
// would lift bf16 and int8 far above, is not listed in /proc/cpuinfo on this machine.
//
//   build/release/bench/quilt_bench_isa_peak --benchmark_repetitions=3

#include <benchmark/benchmark.h>
#include <immintrin.h>

namespace {

constexpr int kAcc = 12;  // independent accumulator chains
constexpr long kInner = 1 << 20;

// void NAME(benchmark::State&), compiled for the instruction set FEATURES (its own `target`
// attribute: the intrinsics need it, and the other functions must not get it): skips with
// MISSING unless SUPPORTED; kAcc accumulators of type ACC start at ZERO; each inner step sets
// acc[k] = STEP, an expression of acc[k] and the operands x = X and y = Y; the counter
// `mac_per_s` counts MACS_PER_STEP multiply-accumulates per step (per instruction).
#define QUILT_ISA_PEAK_BENCH(NAME, FEATURES, SUPPORTED, MISSING, ACC, ZERO, X, Y, STEP, \
                             MACS_PER_STEP)                                             \
  __attribute__((target(FEATURES))) void NAME(benchmark::State& state) {                \
    if (!(SUPPORTED)) {                                                                 \
      state.SkipWithError(MISSING);                                                     \
      return;                                                                           \
    }                                                                                   \
    ACC acc[kAcc];                                                                      \
    for (auto& a : acc) a = ZERO;                                                       \
    const auto x = X, y = Y;                                                            \
    for (auto _ : state) {                                                              \
      for (long i = 0; i < kInner; ++i) {                                               \
        _Pragma("GCC unroll 12") for (int k = 0; k < kAcc; ++k) acc[k] = STEP;          \
      }                                                                                 \
    }                                                                                   \
    benchmark::DoNotOptimize(acc);                                                      \
    state.counters["mac_per_s"] = benchmark::Counter(                                   \
        static_cast<double>(state.iterations()) * kInner * kAcc * MACS_PER_STEP,        \
        benchmark::Counter::kIsRate);                                                   \
  }

QUILT_ISA_PEAK_BENCH(fp32_fma, "avx512f", true, "", __m512, _mm512_setzero_ps(),
                     _mm512_set1_ps(1e-9f), _mm512_set1_ps(1.f), _mm512_fmadd_ps(x, y, acc[k]), 16)
QUILT_ISA_PEAK_BENCH(bf16_dpbf16, "avx512f,avx512bf16", __builtin_cpu_supports("avx512bf16"),
                     "this CPU has no AVX-512 BF16", __m512, _mm512_setzero_ps(),
                     (__m512bh)_mm512_set1_epi16(0x3000), (__m512bh)_mm512_set1_epi16(0x3f80),
                     _mm512_dpbf16_ps(acc[k], x, y), 32)
QUILT_ISA_PEAK_BENCH(int8_vnni, "avx512f,avx512vnni", __builtin_cpu_supports("avx512vnni"),
                     "this CPU has no AVX-512 VNNI", __m512i, _mm512_setzero_si512(),
                     _mm512_set1_epi8(1), _mm512_set1_epi8(1), _mm512_dpbusd_epi32(acc[k], x, y),
                     64)

#undef QUILT_ISA_PEAK_BENCH

}  // namespace

BENCHMARK(fp32_fma)->Name("isa_peak/fp32_vfmadd231ps")->Unit(benchmark::kMillisecond);
BENCHMARK(bf16_dpbf16)->Name("isa_peak/bf16_vdpbf16ps")->Unit(benchmark::kMillisecond);
BENCHMARK(int8_vnni)->Name("isa_peak/int8_vpdpbusd")->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
