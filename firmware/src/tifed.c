/* TIFeD: integer-only training with Direct Feedback Alignment (docs/architecture.md#tifed).
 *
 * Widths (docs/integer-kernels.md): inputs x-128 and activations in [-127, 128] (int16),
 * weights and biases int32 (updates saturate), feedback B int16, error int16 (|e| <= 254),
 * pre-activations z, e.B and the update sums x^T.d in int64, deltas int32. Every division is a
 * floor division (toward minus infinity) as numpy's //.
 */
#include "kernels.h"

#if WITH_TIFED

static int64_t floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) {
        q -= 1;
    }
    return q;
}

/* Pocket tanh of v = z // (256 * fan_in); stores the piece's inverse slope in *ginv. */
static int16_t pocket_tanh(int64_t v, uint8_t *ginv)
{
    if (v >= 128) {
        *ginv = 128u;
        return 128;
    }
    if (v >= 75) {
        *ginv = 8u;
        return (int16_t)(floordiv(v, 4) + 88);
    }
    if (v >= 32) {
        *ginv = 2u;
        return (int16_t)(v + 32);
    }
    if (v >= -31) {
        *ginv = 1u;
        return (int16_t)(2 * v);
    }
    if (v >= -74) {
        *ginv = 2u;
        return (int16_t)(v - 32);
    }
    if (v >= -127) {
        *ginv = 8u;
        return (int16_t)(floordiv(v, 4) - 88);
    }
    *ginv = 128u;
    return -127;
}

/* w - d saturated to int32 (|d| < 2^62, so the int64 difference cannot overflow). */
static int32_t sub_sat(int32_t w, int64_t d)
{
    const int64_t r = (int64_t)w - d;
    if (r > INT32_MAX) {
        return INT32_MAX;
    }
    if (r < INT32_MIN) {
        return INT32_MIN;
    }
    return (int32_t)r;
}

/* Forward `count` samples starting at sample `first` into act[l] rows 0..count-1. */
static void forward(uint16_t first, uint16_t count)
{
    model_t *m = &g_model;
    int64_t *z = (int64_t *)m->acc;
    for (uint16_t s = 0; s < count; ++s) {
        for (unsigned l = 0; l < m->nlayers; ++l) {
            const unsigned in = m->dims[l], out = m->dims[l + 1u];
            const int32_t *W = (const int32_t *)m->W[l];
            const int32_t *b = (const int32_t *)m->b[l];
            for (unsigned j = 0; j < out; ++j) {
                z[j] = b[j];
            }
            if (l == 0u) {
                const uint8_t *x = m->X + (size_t)(first + s) * in;
                for (unsigned i = 0; i < in; ++i) {
                    const int32_t xi = (int32_t)x[i] - 128;
                    const int32_t *row = W + (size_t)i * out;
                    for (unsigned j = 0; j < out; ++j) {
                        z[j] += (int64_t)xi * row[j];
                    }
                }
            } else {
                const int16_t *x = (const int16_t *)m->act[l - 1u] + (size_t)s * in;
                for (unsigned i = 0; i < in; ++i) {
                    const int32_t xi = x[i];
                    const int32_t *row = W + (size_t)i * out;
                    for (unsigned j = 0; j < out; ++j) {
                        z[j] += (int64_t)xi * row[j];
                    }
                }
            }
            int16_t *a = (int16_t *)m->act[l] + (size_t)s * out;
            uint8_t *g = m->ginv[l] + (size_t)s * out;
            const int64_t scale = ((int64_t)1 << m->act_shift) * (int64_t)in;
            for (unsigned j = 0; j < out; ++j) {
                a[j] = pocket_tanh(floordiv(z[j], scale), &g[j]);
            }
        }
    }
}

/* Deltas of layer l for `count` rows, then W -= (x^T d) // lr_inv, b -= sum(d) // lr_inv. */
static void update_layer(unsigned l, uint16_t first, uint16_t count, int64_t lr_inv)
{
    model_t *m = &g_model;
    const unsigned L = m->nlayers, C = m->dims[L];
    const unsigned in = m->dims[l], out = m->dims[l + 1u];
    int32_t *d = (int32_t *)m->delta[0];
    int64_t *acc = (int64_t *)m->acc;
    for (uint16_t s = 0; s < count; ++s) {
        const int16_t *e = m->err + (size_t)s * C;
        const uint8_t *g = m->ginv[l] + (size_t)s * out;
        int32_t *ds = d + (size_t)s * out;
        if (l + 1u == L) {
            for (unsigned j = 0; j < out; ++j) {
                ds[j] = (int32_t)floordiv(e[j], g[j]);
            }
        } else {
            const int16_t *B = m->B[l];
            for (unsigned j = 0; j < out; ++j) {
                int64_t eb = 0;
                for (unsigned k = 0; k < C; ++k) {
                    eb += (int64_t)e[k] * B[(size_t)k * out + j];
                }
                ds[j] = (int32_t)floordiv(eb, g[j]);
            }
        }
    }
    int32_t *W = (int32_t *)m->W[l];
    int32_t *b = (int32_t *)m->b[l];
    for (unsigned i = 0; i < in; ++i) {
        for (unsigned j = 0; j < out; ++j) {
            acc[j] = 0;
        }
        for (uint16_t s = 0; s < count; ++s) {
            int32_t xi;
            if (l == 0u) {
                xi = (int32_t)m->X[(size_t)(first + s) * in + i] - 128;
            } else {
                xi = ((const int16_t *)m->act[l - 1u])[(size_t)s * in + i];
            }
            const int32_t *ds = d + (size_t)s * out;
            for (unsigned j = 0; j < out; ++j) {
                acc[j] += (int64_t)xi * ds[j];
            }
        }
        int32_t *row = W + (size_t)i * out;
        for (unsigned j = 0; j < out; ++j) {
            row[j] = sub_sat(row[j], floordiv(acc[j], lr_inv));
        }
    }
    for (unsigned j = 0; j < out; ++j) {
        int64_t sum = 0;
        for (uint16_t s = 0; s < count; ++s) {
            sum += d[(size_t)s * out + j];
        }
        b[j] = sub_sat(b[j], floordiv(sum, lr_inv));
    }
}

void tifed_train(const train_args_t *a)
{
    model_t *m = &g_model;
    const unsigned L = m->nlayers, C = m->dims[L];
    for (unsigned ep = 0; ep < a->epochs; ++ep) {
        for (uint16_t first = 0; first < a->n; first = (uint16_t)(first + a->batch)) {
            const uint16_t count =
                (uint16_t)((a->n - first) < a->batch ? (a->n - first) : a->batch);
            forward(first, count);
            const int16_t *out = (const int16_t *)m->act[L - 1u];
            for (uint16_t s = 0; s < count; ++s) {
                const unsigned label = m->Y[first + s];
                for (unsigned k = 0; k < C; ++k) {
                    const int32_t target = k == label ? (int32_t)m->target : 0;
                    m->err[(size_t)s * C + k] =
                        (int16_t)((int32_t)out[(size_t)s * C + k] - target);
                }
            }
            for (unsigned l = 0; l < L; ++l) {
                if (a->layer == LAYER_ALL || a->layer == l) {
                    update_layer(l, first, count, (int64_t)a->lr_inv);
                }
            }
        }
    }
}

void tifed_predict(uint16_t n, uint8_t *labels)
{
    model_t *m = &g_model;
    const unsigned L = m->nlayers, C = m->dims[L];
    for (uint16_t s = 0; s < n; ++s) {
        forward(s, 1u);
        const int16_t *out = (const int16_t *)m->act[L - 1u];
        unsigned best = 0;
        for (unsigned k = 1; k < C; ++k) {
            if (out[k] > out[best]) {
                best = k;
            }
        }
        labels[s] = (uint8_t)best;
    }
}

#endif
