/* L-SGD-q8: per-sample L-SGD on int8 fixed-point weights, for fine-tuning (eddl.learn.lsgd_q8).
 *
 * Formats (docs/integer-kernels.md): input p >> 1 and activations int8 Q0.7 from 256-entry
 * tables; weights/biases int8 with fw/fb fractional bits per layer; accumulators int32; deltas
 * int32 with 15 fractional bits; derivatives Q0.14; products and sums that exceed int32 in int64.
 * Shifts round to nearest, ties away from zero, and saturate. Weight and bias updates are rounded
 * stochastically with random bits from lowbias32((counter + e) ^ key), key = lowbias32(seed);
 * the counter advances by one per updated element and survives between TRAIN calls.
 */
#include "kernels.h"

#if WITH_Q8

#define ACT_FRAC 7
#define DELTA_FRAC 15
#define DERIV_FRAC 14

/* table[i + 128] = f(i / 2^k) in Q0.7 (k = 5 for tanh, 4 for sigmoid), as shipped by the
 * numpy reference. */
static const int8_t k_tanh[256] = {
    -127, -127, -127, -127, -127, -127, -127, -127, -127, -127, -127, -127, -127, -127, -127, -127,
    -127, -127, -127, -127, -127, -127, -127, -127, -127, -127, -127, -127, -127, -127, -127, -127,
    -127, -127, -127, -127, -127, -127, -127, -127, -127, -127, -127, -127, -127, -127, -126, -126,
    -126, -126, -126, -126, -126, -126, -126, -125, -125, -125, -125, -125, -124, -124, -124, -124,
    -123, -123, -123, -122, -122, -122, -121, -121, -120, -120, -120, -119, -118, -118, -117, -117,
    -116, -115, -114, -113, -113, -112, -111, -110, -109, -107, -106, -105, -104, -102, -101,  -99,
     -97,  -96,  -94,  -92,  -90,  -88,  -86,  -84,  -81,  -79,  -76,  -74,  -71,  -68,  -65,  -62,
     -59,  -56,  -53,  -49,  -46,  -42,  -39,  -35,  -31,  -28,  -24,  -20,  -16,  -12,   -8,   -4,
       0,    4,    8,   12,   16,   20,   24,   28,   31,   35,   39,   42,   46,   49,   53,   56,
      59,   62,   65,   68,   71,   74,   76,   79,   81,   84,   86,   88,   90,   92,   94,   96,
      97,   99,  101,  102,  104,  105,  106,  107,  109,  110,  111,  112,  113,  113,  114,  115,
     116,  117,  117,  118,  118,  119,  120,  120,  120,  121,  121,  122,  122,  122,  123,  123,
     123,  124,  124,  124,  124,  125,  125,  125,  125,  125,  126,  126,  126,  126,  126,  126,
     126,  126,  126,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,
     127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,
     127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,
};

static const int8_t k_sigmoid[256] = {
       0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,
       0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,
       0,    0,    0,    0,    0,    0,    0,    0,    1,    1,    1,    1,    1,    1,    1,    1,
       1,    1,    1,    1,    1,    1,    1,    1,    1,    1,    2,    2,    2,    2,    2,    2,
       2,    2,    3,    3,    3,    3,    3,    4,    4,    4,    4,    4,    5,    5,    5,    6,
       6,    6,    7,    7,    8,    8,    9,    9,   10,   10,   11,   12,   12,   13,   14,   14,
      15,   16,   17,   18,   19,   20,   21,   22,   23,   25,   26,   27,   29,   30,   31,   33,
      34,   36,   38,   39,   41,   43,   45,   46,   48,   50,   52,   54,   56,   58,   60,   62,
      64,   66,   68,   70,   72,   74,   76,   78,   80,   82,   83,   85,   87,   89,   90,   92,
      94,   95,   97,   98,   99,  101,  102,  103,  105,  106,  107,  108,  109,  110,  111,  112,
     113,  114,  114,  115,  116,  116,  117,  118,  118,  119,  119,  120,  120,  121,  121,  122,
     122,  122,  123,  123,  123,  124,  124,  124,  124,  124,  125,  125,  125,  125,  125,  126,
     126,  126,  126,  126,  126,  126,  126,  127,  127,  127,  127,  127,  127,  127,  127,  127,
     127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,
     127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,
     127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,  127,
};

static uint32_t lowbias32(uint32_t v)
{
    v ^= v >> 16;
    v *= 0x7FEB352Du;
    v ^= v >> 15;
    v *= 0x846CA68Bu;
    v ^= v >> 16;
    return v;
}

/* a / 2^k rounded to nearest, ties away from zero (k >= 0). */
static int64_t shift_round(int64_t a, unsigned k)
{
    if (k == 0u) {
        return a;
    }
    const int64_t half = (int64_t)1 << (k - 1u);
    if (a < 0) {
        return -((-a + half) >> k);
    }
    return (a + half) >> k;
}

static int64_t sat(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* Floor shift of u by s (1..32) rounded up with probability rem / 2^s. */
static int64_t stochastic_shift(int64_t u, unsigned s, uint32_t key, uint32_t *counter)
{
    const uint32_t r = lowbias32(*counter ^ key);
    *counter += 1u;
    const int64_t threshold = (int64_t)(s == 32u ? r : (r >> (32u - s)));
    const int64_t q = u >> s; /* arithmetic: floor */
    const int64_t rem = u - (int64_t)((uint64_t)q << s);
    return q + (threshold < rem ? 1 : 0);
}

static const int8_t *table_of(uint8_t act) { return act == ACT_TANH ? k_tanh : k_sigmoid; }
static unsigned table_frac(uint8_t act) { return act == ACT_TANH ? 5u : 4u; }

/* Input of layer l for the current sample: Q0.7 pixels (l = 0) or the stored outputs. */
static int32_t input_at(const uint8_t *x, unsigned l, unsigned k)
{
    if (l == 0u) {
        return (int32_t)(x[k] >> 1);
    }
    return ((const int8_t *)g_model.act[l - 1u])[k];
}

/* Forward one sample; the output layer's accumulators stay in m->acc for predict. */
static void forward(const uint8_t *x)
{
    model_t *m = &g_model;
    int32_t *acc = (int32_t *)m->acc;
    for (unsigned l = 0; l < m->nlayers; ++l) {
        const unsigned in = m->dims[l], out = m->dims[l + 1u];
        const int8_t *W = (const int8_t *)m->W[l];
        const int8_t *b = (const int8_t *)m->b[l];
        const unsigned fw = (unsigned)m->fmt[l][0], fb = (unsigned)m->fmt[l][1];
        for (unsigned j = 0; j < out; ++j) {
            acc[j] = (int32_t)b[j] * ((int32_t)1 << (fw + ACT_FRAC - fb));
        }
        for (unsigned k = 0; k < in; ++k) {
            const int32_t a = input_at(x, l, k);
            const int8_t *row = W + (size_t)k * out;
            for (unsigned j = 0; j < out; ++j) {
                acc[j] += a * row[j];
            }
        }
        const int8_t *table = table_of(m->acts[l]);
        const unsigned shift = fw + ACT_FRAC - table_frac(m->acts[l]);
        int8_t *y = (int8_t *)m->act[l];
        for (unsigned j = 0; j < out; ++j) {
            const int64_t idx = sat(shift_round(acc[j], shift), -128, 127);
            y[j] = table[idx + 128];
        }
    }
}

static void sample(const uint8_t *x, uint8_t label, const train_args_t *a, uint32_t key,
                   uint32_t *counter)
{
    model_t *m = &g_model;
    const unsigned last = m->nlayers - 1u;
    const unsigned lowest = a->layer == LAYER_ALL ? 0u : a->layer;
    forward(x);
    int32_t *d = (int32_t *)m->delta[0];
    int32_t *next = (int32_t *)m->delta[1];
    const int8_t *y = (const int8_t *)m->act[last];
    for (unsigned j = 0; j < m->dims[last + 1u]; ++j) {
        const int32_t t = j == label ? (1 << ACT_FRAC) : 0;
        d[j] = (y[j] - t) * (1 << (DELTA_FRAC - ACT_FRAC));
    }
    for (unsigned l = last + 1u; l-- > lowest;) {
        const unsigned in = m->dims[l], out = m->dims[l + 1u];
        const unsigned fw = (unsigned)m->fmt[l][0], fb = (unsigned)m->fmt[l][1];
        const int update = a->layer == LAYER_ALL || a->layer == l;
        const unsigned shift_w = ACT_FRAC + DELTA_FRAC + a->lr_inv - fw;
        int8_t *W = (int8_t *)m->W[l];
        for (unsigned k = 0; k < in; ++k) {
            int8_t *row = W + (size_t)k * out;
            const int64_t ak = input_at(x, l, k);
            int64_t s = 0;
            for (unsigned j = 0; j < out; ++j) {
                s += (int64_t)row[j] * d[j]; /* with the old weight */
                if (update) {
                    const int64_t dw = stochastic_shift(ak * d[j], shift_w, key, counter);
                    row[j] = (int8_t)sat((int64_t)row[j] - dw, -128, 127);
                }
            }
            if (l > lowest) {
                const int64_t yk = input_at(x, l, k);
                const int64_t deriv = m->acts[l - 1u] == ACT_TANH
                                          ? ((int64_t)1 << (2 * ACT_FRAC)) - yk * yk
                                          : yk * ((1 << ACT_FRAC) - yk);
                next[k] = (int32_t)sat(shift_round(s * deriv, fw + DERIV_FRAC), INT32_MIN,
                                       INT32_MAX);
            }
        }
        if (update) {
            int8_t *b = (int8_t *)m->b[l];
            const unsigned shift_b = DELTA_FRAC + a->lr_inv - fb;
            for (unsigned j = 0; j < out; ++j) {
                const int64_t db = stochastic_shift(d[j], shift_b, key, counter);
                b[j] = (int8_t)sat((int64_t)b[j] - db, -128, 127);
            }
        }
        int32_t *t = d;
        d = next;
        next = t;
    }
}

/* Seed and counter live in the 8-byte TENSOR_Q8STATE: {u32 seed, u32 counter}, little endian. */
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

int q8_check_formats(void)
{
    const model_t *m = &g_model;
    for (unsigned l = 0; l < m->nlayers; ++l) {
        const int fw = m->fmt[l][0], fb = m->fmt[l][1];
        if (fw < 0 || fw > 14 || fb < 0 || fb > 14 || fb > fw + ACT_FRAC) {
            return ERR_BAD_ARG;
        }
    }
    return 0;
}

void q8_train(const train_args_t *a)
{
    model_t *m = &g_model;
    const uint32_t key = lowbias32(get32(m->q8state));
    uint32_t counter = get32(m->q8state + 4);
    for (unsigned ep = 0; ep < a->epochs; ++ep) {
        for (uint16_t s = 0; s < a->n; ++s) {
            sample(m->X + (size_t)s * m->dims[0], m->Y[s], a, key, &counter);
        }
    }
    put32(m->q8state + 4, counter);
}

void q8_predict(uint16_t n, uint8_t *labels)
{
    model_t *m = &g_model;
    const unsigned C = m->dims[m->nlayers];
    const int32_t *acc = (const int32_t *)m->acc;
    for (uint16_t s = 0; s < n; ++s) {
        forward(m->X + (size_t)s * m->dims[0]);
        unsigned best = 0;
        for (unsigned k = 1; k < C; ++k) {
            if (acc[k] > acc[best]) {
                best = k;
            }
        }
        labels[s] = (uint8_t)best;
    }
}

#endif
