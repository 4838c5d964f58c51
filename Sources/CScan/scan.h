// Byte scans for the exit-line detector, in C because Swift cannot pick an instruction set at
// run time: the AVX2 version is compiled for AVX2 by a function attribute (no global -mavx2, so
// the binary still runs on any x86-64) and chosen with __builtin_cpu_supports when it is called.
// A system-library target compiles no .c files, so everything here is `static inline`.
// This module is separate from CEpoll so that Echo, which knows nothing about epoll, need not
// import it.
#ifndef CSCAN_SCAN_H
#define CSCAN_SCAN_H

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__)
#include <immintrin.h>

/// 1 when cscan_newline_before_e_avx2 may be called on this CPU.
static inline int cscan_has_avx2(void) {
    // Reads a word that compiler-rt / libgcc fills in before main (cpuid): no system call.
    return __builtin_cpu_supports("avx2");
}

/// The first q in [from, n - 1) with base[q] == '\n' and base[q + 1] == 'e', or -1.
/// Thirty-two positions per compare, two compares per step; the last step overlaps what was
/// checked, so no byte is looked at one at a time unless the segment is shorter than 33 bytes.
__attribute__((target("avx2")))
static inline ptrdiff_t cscan_newline_before_e_avx2(const uint8_t *base, ptrdiff_t n, ptrdiff_t from) {
    const __m256i newlines = _mm256_set1_epi8('\n');
    const __m256i es = _mm256_set1_epi8('e');
    ptrdiff_t q = from;
    // 33 to 65 bytes (a typical message): two vectors, the first at `from`, the second ending at
    // the last byte, cover every position; one test answers "none" for the whole segment
    // (about 15 instructions where the loops below take 40 for 64 bytes, callgrind). A hit
    // goes on below to find the first position.
    if (n - from >= 33 && n - from <= 65) {
        __m256i lo = _mm256_and_si256(
            _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(base + from)), newlines),
            _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(base + from + 1)), es));
        __m256i hi = _mm256_and_si256(
            _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(base + n - 33)), newlines),
            _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(base + n - 32)), es));
        __m256i both = _mm256_or_si256(lo, hi);
        if (_mm256_testz_si256(both, both)) return -1;
    }
    // 64 positions per step: each needs its byte and the next, so 65 bytes must be there.
    while (q + 65 <= n) {
        __m256i lo = _mm256_and_si256(
            _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(base + q)), newlines),
            _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(base + q + 1)), es));
        __m256i hi = _mm256_and_si256(
            _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(base + q + 32)), newlines),
            _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(base + q + 33)), es));
        if (!_mm256_testz_si256(_mm256_or_si256(lo, hi), _mm256_or_si256(lo, hi))) {
            uint32_t mlo = (uint32_t)_mm256_movemask_epi8(lo);
            if (mlo) return q + __builtin_ctz(mlo);
            return q + 32 + __builtin_ctz((uint32_t)_mm256_movemask_epi8(hi));
        }
        q += 64;
    }
    if (q + 1 >= n) return -1;
    if (n >= 33) {
        // At most 64 positions are left: one or two vectors, the last one ending at the last
        // byte, with the positions before q (already checked) masked off.
        while (q + 33 <= n) {
            uint32_t m = (uint32_t)_mm256_movemask_epi8(_mm256_and_si256(
                _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(base + q)), newlines),
                _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(base + q + 1)), es)));
            if (m) return q + __builtin_ctz(m);
            q += 32;
        }
        if (q + 1 >= n) return -1;
        ptrdiff_t start = n - 33;
        uint32_t m = (uint32_t)_mm256_movemask_epi8(_mm256_and_si256(
            _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(base + start)), newlines),
            _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(base + start + 1)), es)));
        m &= ~0u << (q - start);  // 0 < q - start < 32
        return m ? start + __builtin_ctz(m) : -1;
    }
    for (; q + 1 < n; q++) {
        if (base[q] == '\n' && base[q + 1] == 'e') return q;
    }
    return -1;
}

#else

static inline int cscan_has_avx2(void) { return 0; }

static inline ptrdiff_t cscan_newline_before_e_avx2(const uint8_t *base, ptrdiff_t n, ptrdiff_t from) {
    (void)base; (void)n; (void)from;
    return -1;
}

#endif

#endif
