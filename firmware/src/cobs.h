/* COBS (consistent overhead byte stuffing): frames carry no 0x00, which delimits them. */
#ifndef EDDL_COBS_H
#define EDDL_COBS_H

#include <stddef.h>
#include <stdint.h>

/* Encode `n` bytes into `out` (room for n + n/254 + 1, not overlapping `in`); returns the
 * encoded length. */
size_t cobs_encode(const uint8_t *in, size_t n, uint8_t *out);
/* Decode in place-safe (out may equal in); returns the decoded length or -1 if malformed. */
long cobs_decode(const uint8_t *in, size_t n, uint8_t *out);

#endif
