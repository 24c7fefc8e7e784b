#include "cobs.h"

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
        uint8_t code = in[r++];
        if (code == 0u) {
            return -1;
        }
        for (uint8_t i = 1; i < code; ++i) {
            if (r >= n || in[r] == 0u) {
                return -1;
            }
            out[w++] = in[r++];
        }
        /* A group shorter than 0xFF implies a zero, except after the last group. */
        if (code != 0xFFu && r < n) {
            out[w++] = 0u;
        }
    }
    return (long)w;
}
