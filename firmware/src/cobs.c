#include "cobs.h"

#include <string.h>

size_t cobs_encode(const uint8_t *in, size_t n, uint8_t *out)
{
    size_t code_at = 0, w = 1;
    uint8_t code = 1;
    for (size_t i = 0; i < n; ++i) {
        if (in[i] == 0u) {
            out[code_at] = code;
            code_at = w++;
            code = 1;
        } else {
            out[w++] = in[i];
            if (++code == 0xFFu && i + 1u < n) { /* next group only if data follows */
                out[code_at] = code;
                code_at = w++;
                code = 1;
            }
        }
    }
    out[code_at] = code;
    return w;
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
