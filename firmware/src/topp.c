/* Top-P selection in place: the k entries of largest magnitude of phi - theta over the shared
 * layers, with no buffer proportional to the model beyond the theta snapshot.
 *
 * The order is that of eddl.learn.topp: one threshold across all shared tensors (W0, b0, W1, b1,
 * ...), ties at the threshold taken by position, lowest flat index of the lowest tensor first.
 * Each entry gets an unsigned 32-bit key that orders like its magnitude: the float's bits
 * without the sign (positive IEEE floats order like their bit patterns), or for lsgd-q8 the
 * integer difference scaled to a common format, |d| << (14 - f), f being the tensor's fractional
 * bits (the real difference is d * 2^-f, exactly a float32). A radix select over those keys
 * (four passes with a 256-counter histogram planned in the arena) finds the k-th largest key t
 * and how many entries equal to t are kept; each tensor's share of those ties is stored, so a
 * read streams a tensor's kept entries in index order with one scan and no sort.
 *
 * TOPP_READ_INT8 streams the same entries with int8 values and one float scale per tensor,
 * eddl.net.sparse's encoding: scale = max|v| / 127 over the kept values (1 when none is kept),
 * q = clip(rint(v / scale), -127, 127), rounding half to even. The largest kept magnitude is the
 * tensor's largest key (kept whenever anything of the tensor is), recorded at select time.
 */
#include "topp.h"

#include <string.h>

#include "kernels.h"
#include "model.h"
#include "proto.h"

#define MAX_SHARED_TENSORS (2u * MAX_LAYERS)

typedef struct {
    uint8_t snapshot;  /* theta holds a copy of the shared layers */
    uint8_t selected;  /* the fields below describe the current weights */
    uint32_t threshold;
    uint32_t ties[MAX_SHARED_TENSORS];  /* entries equal to the threshold kept, per tensor */
    uint32_t counts[MAX_SHARED_TENSORS]; /* entries kept, per tensor */
    uint32_t top[MAX_SHARED_TENSORS];    /* largest key, per tensor */
} topp_state_t;

static topp_state_t s_topp;

void topp_invalidate(void) { s_topp.selected = 0u; }

void topp_reset(void) { memset(&s_topp, 0, sizeof s_topp); }

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* Shared tensor j: layer j / 2, W (even) or b (odd). */
typedef struct {
    const void *phi;
    const void *theta;
    size_t size;
    unsigned shift; /* lsgd-q8: 14 - fractional bits */
} view_t;

static int is_q8(void) { return g_model.algo == ALGO_LSGD_Q8; }

static unsigned shared_tensors(void) { return 2u * g_model.shared; }

static view_t view(unsigned j)
{
    const model_t *m = &g_model;
    const unsigned l = j / 2u;
    view_t v;
    const size_t out = m->dims[l + 1u];
    if (j % 2u == 0u) {
        v.phi = m->W[l];
        v.theta = m->thW[l];
        v.size = (size_t)m->dims[l] * out;
    } else {
        v.phi = m->b[l];
        v.theta = m->thb[l];
        v.size = out;
    }
    v.shift = is_q8() ? 14u - (unsigned)m->fmt[l][j % 2u] : 0u;
    return v;
}

static float diff_f32(const view_t *v, size_t i)
{
    return ((const float *)v->phi)[i] - ((const float *)v->theta)[i];
}

static int32_t diff_q8(const view_t *v, size_t i)
{
    return (int32_t)((const int8_t *)v->phi)[i] - (int32_t)((const int8_t *)v->theta)[i];
}

static uint32_t key_at(const view_t *v, size_t i)
{
    if (is_q8()) {
        const int32_t d = diff_q8(v, i);
        return (uint32_t)(d < 0 ? -d : d) << v->shift;
    }
    const float d = diff_f32(v, i);
    uint32_t bits;
    memcpy(&bits, &d, sizeof bits);
    return bits & 0x7FFFFFFFu;
}

static size_t elem_bytes(void) { return is_q8() ? 1u : 4u; }

static long on_snapshot(uint8_t *out)
{
    uint32_t total = 0u;
    for (unsigned j = 0; j < shared_tensors(); ++j) {
        const view_t v = view(j);
        memcpy((void *)(uintptr_t)v.theta, v.phi, v.size * elem_bytes());
        total += (uint32_t)v.size;
    }
    s_topp.snapshot = 1u;
    s_topp.selected = 0u;
    put32(out, total);
    return 4;
}

static long on_select(const uint8_t *p, size_t n, uint8_t *out)
{
    if (n != 5u) {
        return -ERR_BAD_ARG;
    }
    if (!s_topp.snapshot) {
        return -ERR_NOT_READY;
    }
    const unsigned tensors = shared_tensors();
    uint32_t total = 0u;
    for (unsigned j = 0; j < tensors; ++j) {
        const view_t v = view(j);
        total += (uint32_t)v.size;
        if (!is_q8()) {
            for (size_t i = 0; i < v.size; ++i) {
                if (key_at(&v, i) >= 0x7F800000u) { /* Inf or NaN */
                    return -ERR_NOT_FINITE;
                }
            }
        }
    }
    const uint32_t k = get32(p + 1);
    if (k < 1u || k > total) {
        return -ERR_BAD_ARG;
    }
    /* Radix select, most significant byte first: `left` is the rank of the k-th largest key
     * among the keys that share the prefix found so far. */
    uint32_t *hist = g_model.hist;
    uint32_t prefix = 0u, mask = 0u, left = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        memset(hist, 0, 256u * sizeof *hist);
        for (unsigned j = 0; j < tensors; ++j) {
            const view_t v = view(j);
            for (size_t i = 0; i < v.size; ++i) {
                const uint32_t key = key_at(&v, i);
                if ((key & mask) == prefix) {
                    hist[(key >> shift) & 0xFFu]++;
                }
            }
        }
        unsigned b = 255u;
        while (hist[b] < left) {
            left -= hist[b];
            --b;
        }
        prefix |= (uint32_t)b << shift;
        mask |= 0xFFu << shift;
    }
    /* `left` entries equal to the threshold are kept, the first ones by position. */
    uint32_t ties_left = left;
    for (unsigned j = 0; j < tensors; ++j) {
        const view_t v = view(j);
        uint32_t above = 0u, equal = 0u, top = 0u;
        for (size_t i = 0; i < v.size; ++i) {
            const uint32_t key = key_at(&v, i);
            above += key > prefix;
            equal += key == prefix;
            top = key > top ? key : top;
        }
        s_topp.top[j] = top;
        const uint32_t take = equal < ties_left ? equal : ties_left;
        ties_left -= take;
        s_topp.ties[j] = take;
        s_topp.counts[j] = above + take;
    }
    s_topp.threshold = prefix;
    s_topp.selected = 1u;
    put32(out, k);
    put32(out + 4, total);
    put32(out + 8, prefix);
    put32(out + 12, left);
    for (unsigned j = 0; j < tensors; ++j) {
        put32(out + 16 + 4u * j, s_topp.counts[j]);
    }
    return (long)(16u + 4u * tensors);
}

/* The value of entry i as a float: exact for lsgd-q8 (d * 2^-f, d a small integer). */
static float value_at(const view_t *v, size_t i)
{
    if (is_q8()) {
        return (float)diff_q8(v, i) * (1.0f / (float)(1u << (14u - v->shift)));
    }
    return diff_f32(v, i);
}

/* The magnitude a key stands for (keys order like magnitudes; see the file comment). */
static float key_value(uint32_t key)
{
    if (is_q8()) {
        return (float)key * (1.0f / 16384.0f); /* |d| << (14 - f) = |d| * 2^-f * 2^14 */
    }
    float f;
    memcpy(&f, &key, sizeof f);
    return f;
}

/* rint: to nearest, ties to even (|r| < 2^23 here, so the truncation is exact). */
static int32_t round_even(float r)
{
    int32_t n = (int32_t)r;
    const float frac = r - (float)n;
    if (frac > 0.5f || (frac == 0.5f && (n & 1))) {
        ++n;
    } else if (frac < -0.5f || (frac == -0.5f && (n & 1))) {
        --n;
    }
    return n;
}

static int8_t quantize(float value, float scale)
{
    const int32_t q = round_even(value / scale);
    return (int8_t)(q > 127 ? 127 : (q < -127 ? -127 : q));
}

/* TOPP_READ and TOPP_READ_INT8: request op u8, tensor u8, first u32, at most u16. */
static long on_read(const uint8_t *p, size_t n, uint8_t *out)
{
    if (n != 8u) {
        return -ERR_BAD_ARG;
    }
    if (!s_topp.selected) {
        return -ERR_NOT_READY;
    }
    const int int8 = p[0] == TOPP_READ_INT8;
    const uint8_t id = p[1];
    const unsigned l = id / 4u, kind = id % 4u;
    if (kind > 1u || l >= g_model.shared) {
        return -ERR_BAD_ARG;
    }
    const unsigned j = 2u * l + kind;
    const uint32_t first = get32(p + 2);
    const uint32_t most = (uint32_t)p[6] | ((uint32_t)p[7] << 8);
    const uint32_t cap = int8 ? (MAX_PAYLOAD - TOPP_INT8_HEAD_BYTES) / TOPP_INT8_RECORD_BYTES
                              : MAX_PAYLOAD / TOPP_RECORD_BYTES;
    if (first > s_topp.counts[j] || most < 1u || most > cap) {
        return -ERR_BAD_ARG;
    }
    const view_t v = view(j);
    const uint32_t t = s_topp.threshold;
    float scale = 1.0f;
    if (int8 && s_topp.counts[j] > 0u && s_topp.top[j] > 0u) {
        scale = key_value(s_topp.top[j]) / 127.0f;
    }
    uint8_t *rec = out;
    if (int8) {
        uint32_t bits;
        memcpy(&bits, &scale, sizeof bits);
        put32(rec, bits);
        rec += TOPP_INT8_HEAD_BYTES;
    }
    uint32_t seen = 0u, ties = 0u, written = 0u;
    for (size_t i = 0; i < v.size && written < most; ++i) {
        const uint32_t key = key_at(&v, i);
        int keep = key > t;
        if (key == t && ties < s_topp.ties[j]) {
            ++ties;
            keep = 1;
        }
        if (!keep) {
            continue;
        }
        if (seen++ < first) {
            continue;
        }
        ++written;
        put32(rec, (uint32_t)i);
        if (int8) {
            rec[4] = (uint8_t)quantize(value_at(&v, i), scale);
            rec += TOPP_INT8_RECORD_BYTES;
        } else if (is_q8()) {
            put32(rec + 4, (uint32_t)diff_q8(&v, i));
            rec += TOPP_RECORD_BYTES;
        } else {
            const float d = diff_f32(&v, i);
            uint32_t bits;
            memcpy(&bits, &d, sizeof bits);
            put32(rec + 4, bits);
            rec += TOPP_RECORD_BYTES;
        }
    }
    return (long)(rec - out);
}

long topp_request(const uint8_t *p, size_t n, uint8_t *out)
{
    if (n < 1u) {
        return -ERR_BAD_ARG;
    }
    if (!g_model.ready) {
        return -ERR_NOT_READY;
    }
    if (g_model.shared == 0u) {
        return -ERR_BAD_ARG; /* SETUP planned no snapshot */
    }
#if WITH_Q8
    if (is_q8() && q8_check_formats() != 0) {
        return -ERR_BAD_ARG; /* the keys need every layer's fractional bits */
    }
#endif
    switch (p[0]) {
    case TOPP_SNAPSHOT:
        return n == 1u ? on_snapshot(out) : -ERR_BAD_ARG;
    case TOPP_SELECT:
        return on_select(p, n, out);
    case TOPP_READ:
    case TOPP_READ_INT8:
        return on_read(p, n, out);
    default:
        return -ERR_BAD_ARG;
    }
}
