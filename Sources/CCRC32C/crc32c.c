/* crc32c.c - CRC-32C with the CPU's crc32 instruction
 *
 * The spool checksums every record it writes; the table-driven Swift version costs
 * about a microsecond per 2 KB, the instruction a tenth of that. Swift cannot call
 * target-specific intrinsics, so this file does, and says at run time whether the
 * CPU has them; the Swift side falls back to its tables otherwise.
 */
#include "ccrc32c.h"
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>

int carrier_crc32c_hw_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2");
}

__attribute__((target("sse4.2")))
uint32_t carrier_crc32c_hw(uint32_t crc, const void *p, size_t n) {
    const unsigned char *bytes = p;
    uint64_t c = ~crc;
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, bytes, 8);
        c = _mm_crc32_u64(c, word);
        bytes += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n > 0) {
        c32 = _mm_crc32_u8(c32, *bytes++);
        n--;
    }
    return ~c32;
}
#else
int carrier_crc32c_hw_available(void) { return 0; }
uint32_t carrier_crc32c_hw(uint32_t crc, const void *p, size_t n) { (void)p; (void)n; return crc; }
#endif
