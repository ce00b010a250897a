#pragma once
// MICS_VECTOR_CLONES (private to lib/device/cpu): the CPU backend's hot loops are compiled
// twice on x86-64, for the baseline ISA and for AVX2, and the loader picks one for the CPU
// it runs on: twice the vector width of the baseline build. Neither clone may contract
// into FMA (AVX2 does not imply it), so both give the same bits and replicas on different
// CPUs stay identical.
#if defined(__x86_64__) && defined(__GNUC__)
#define MICS_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MICS_VECTOR_CLONES
#endif
