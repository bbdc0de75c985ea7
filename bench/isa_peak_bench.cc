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

__attribute__((target("avx512f"))) void fp32_fma(benchmark::State& state) {
  __m512 acc[kAcc];
  for (auto& a : acc) a = _mm512_setzero_ps();
  const __m512 x = _mm512_set1_ps(1e-9f), y = _mm512_set1_ps(1.f);
  for (auto _ : state) {
    for (long i = 0; i < kInner; ++i) {
#pragma GCC unroll 12
      for (int k = 0; k < kAcc; ++k) acc[k] = _mm512_fmadd_ps(x, y, acc[k]);
    }
  }
  benchmark::DoNotOptimize(acc);
  state.counters["mac_per_s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * kInner * kAcc * 16, benchmark::Counter::kIsRate);
}

__attribute__((target("avx512f,avx512bf16"))) void bf16_dpbf16(benchmark::State& state) {
  if (!__builtin_cpu_supports("avx512bf16")) {
    state.SkipWithError("this CPU has no AVX-512 BF16");
    return;
  }
  __m512 acc[kAcc];
  for (auto& a : acc) a = _mm512_setzero_ps();
  const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3000), y = (__m512bh)_mm512_set1_epi16(0x3f80);
  for (auto _ : state) {
    for (long i = 0; i < kInner; ++i) {
#pragma GCC unroll 12
      for (int k = 0; k < kAcc; ++k) acc[k] = _mm512_dpbf16_ps(acc[k], x, y);
    }
  }
  benchmark::DoNotOptimize(acc);
  state.counters["mac_per_s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * kInner * kAcc * 32, benchmark::Counter::kIsRate);
}

__attribute__((target("avx512f,avx512vnni"))) void int8_vnni(benchmark::State& state) {
  if (!__builtin_cpu_supports("avx512vnni")) {
    state.SkipWithError("this CPU has no AVX-512 VNNI");
    return;
  }
  __m512i acc[kAcc];
  for (auto& a : acc) a = _mm512_setzero_si512();
  const __m512i x = _mm512_set1_epi8(1), y = _mm512_set1_epi8(1);
  for (auto _ : state) {
    for (long i = 0; i < kInner; ++i) {
#pragma GCC unroll 12
      for (int k = 0; k < kAcc; ++k) acc[k] = _mm512_dpbusd_epi32(acc[k], x, y);
    }
  }
  benchmark::DoNotOptimize(acc);
  state.counters["mac_per_s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * kInner * kAcc * 64, benchmark::Counter::kIsRate);
}

}  // namespace

BENCHMARK(fp32_fma)->Name("isa_peak/fp32_vfmadd231ps")->Unit(benchmark::kMillisecond);
BENCHMARK(bf16_dpbf16)->Name("isa_peak/bf16_vdpbf16ps")->Unit(benchmark::kMillisecond);
BENCHMARK(int8_vnni)->Name("isa_peak/int8_vpdpbusd")->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
