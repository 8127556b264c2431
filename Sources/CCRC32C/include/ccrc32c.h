/* ccrc32c.h - CRC-32C with the CPU's crc32 instruction (SSE 4.2 on x86-64) */
#ifndef CARRIER_CCRC32C_H
#define CARRIER_CCRC32C_H

#include <stddef.h>
#include <stdint.h>

/* carrier_crc32c_hw_available - nonzero when carrier_crc32c_hw may be called. */
int carrier_crc32c_hw_available(void);

/* carrier_crc32c_hw - the CRC-32C of n octets at p, continuing from crc (0 to start). */
uint32_t carrier_crc32c_hw(uint32_t crc, const void *p, size_t n);

#endif
