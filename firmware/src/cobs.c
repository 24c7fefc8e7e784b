#include "cobs.h"

#include <string.h>

size_t cobs_encode(const uint8_t *in, size_t n, uint8_t *out)
{
    /* One memchr and one memcpy per group (at most 254 bytes), not a branch per byte: the
     * host simulator sends megabytes per second through this. */
    size_t r = 0, w = 0;
    for (;;) {
        const size_t max = n - r < 254u ? n - r : 254u;
        const uint8_t *zero = memchr(in + r, 0, max);
        const size_t len = zero != NULL ? (size_t)(zero - (in + r)) : max;
        out[w] = (uint8_t)(len + 1u);
        memcpy(out + w + 1u, in + r, len);
        w += len + 1u;
        r += len;
        if (zero != NULL) {
            r++; /* the zero is the group's end; a group follows even at the very end */
        } else if (len < 254u || r == n) {
            return w; /* data ended (a full group at the end needs no empty one after it) */
        }
    }
}

long cobs_decode(const uint8_t *in, size_t n, uint8_t *out)
{
    size_t r = 0, w = 0;
    while (r < n) {
        const size_t len = (size_t)in[r++] - 1u; /* bytes in this group */
        if (len == (size_t)-1 || len > n - r || memchr(in + r, 0, len) != NULL) {
            return -1;
        }
        memmove(out + w, in + r, len); /* out may be in: w never passes r */
        w += len;
        r += len;
        /* A group shorter than 0xFF implies a zero, except after the last group. */
        if (len != 0xFEu && r < n) {
            out[w++] = 0u;
        }
    }
    return (long)w;
}
