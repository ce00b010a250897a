#pragma once
// MICS_VECTOR_CLONES (private to lib/device/cpu): the CPU backend's hot loops are compiled
// twice on x86-64, for the baseline ISA and for AVX2, and the loader picks one for the CPU
// it runs on: twice the vector width of the baseline build. Neither clone may contract
// into FMA (AVX2 does not imply it), so element-wise loops (AdamW, accumulation, GELU)
// give the same bits in both. Loops with an `omp simd reduction` (a row's max, sum of
// exponentials or dot product in softmax, cross-entropy, LayerNorm and attention) add in
// the clone's vector-width order, so a baseline CPU and an AVX2 CPU may differ in the
// last bits of those rows. Replicas still stay identical on mixed CPUs: such rows are one
// rank's own data, summed over ranks by the collectives before any update, and the one
// reduction every replica repeats, the gradient norm (streaming_kernels.cpp block_sum),
// adds in a fixed lane order.
#if defined(__x86_64__) && defined(__GNUC__)
#define MICS_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MICS_VECTOR_CLONES
#endif
