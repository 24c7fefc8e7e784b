/* CRC-32 (IEEE 802.3, reflected, as zlib.crc32): a 256-entry table, one lookup per byte;
 * built with -DCRC32_SLICES=16, sixteen bytes per step (slicing-by-16, 16 KB more tables). */
#ifndef EDDL_CRC32_H
#define EDDL_CRC32_H

#include <stddef.h>
#include <stdint.h>

uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n);
uint32_t crc32(const uint8_t *p, size_t n);

#endif
