#include "model.h"

#include <string.h>

#include "kernels.h"
#include "topp.h"

model_t g_model;
uint8_t g_arena[ARENA_BYTES] __attribute__((aligned(8)));

/* Offsets are 64-bit: 16-bit widths multiply past 2^32 on a 32-bit target. */
static uint64_t take(uint64_t *off, uint64_t bytes)
{
    const uint64_t at = (*off + 7u) & ~(uint64_t)7u;
    *off = at + bytes;
    return at;
}

uint64_t model_x_row_bytes(const model_t *m)
{
    return (uint64_t)m->dims[0] * ((m->format & FORMAT_FLOAT_INPUTS) ? 4u : 1u);
}

uint64_t model_y_row_bytes(const model_t *m)
{
    return (m->format & FORMAT_FLOAT_TARGETS) ? (uint64_t)m->dims[m->nlayers] * 4u : 1u;
}

/* Lay out every buffer of `m` from offset 0; pointers hold offsets until relocated. */
static uint64_t plan(model_t *m)
{
    uint64_t off = 0;
    const unsigned L = m->nlayers;
    const uint64_t batch = m->max_batch;
    uint16_t widest = 0; /* widest layer output */
    for (unsigned l = 1; l <= L; ++l) {
        if (m->dims[l] > widest) {
            widest = m->dims[l];
        }
    }
    m->widest = widest;
    memset(m->W, 0, sizeof m->W);
    memset(m->b, 0, sizeof m->b);
    memset(m->B, 0, sizeof m->B);
    memset(m->fmt, 0, sizeof m->fmt);
    memset(m->act, 0, sizeof m->act);
    memset(m->ginv, 0, sizeof m->ginv);
    memset(m->delta, 0, sizeof m->delta);
    memset(m->gW, 0, sizeof m->gW);
    memset(m->gb, 0, sizeof m->gb);
    m->err = NULL;
    m->acc = NULL;
    m->xin = NULL;
    m->q8state = NULL;
    memset(m->thW, 0, sizeof m->thW);
    memset(m->thb, 0, sizeof m->thb);
    m->hist = NULL;
#define AT(T, bytes) ((T)(uintptr_t)(take(&off, (bytes)) + 1u))
    for (unsigned l = 0; l < L; ++l) {
        const uint64_t in = m->dims[l], out = m->dims[l + 1u];
        switch (m->algo) {
        case ALGO_TIFED:
            m->W[l] = AT(void *, in * out * 4u);
            m->b[l] = AT(void *, out * 4u);
            if (l + 1u < L) {
                m->B[l] = AT(int16_t *, (uint64_t)m->dims[L] * out * 2u);
            }
            m->act[l] = AT(void *, batch * out * 2u);
            m->ginv[l] = AT(uint8_t *, batch * out);
            break;
        case ALGO_LSGD_Q8:
            m->W[l] = AT(void *, in * out);
            m->b[l] = AT(void *, out);
            m->fmt[l] = AT(int8_t *, 2u);
            m->act[l] = AT(void *, out);
            break;
        case ALGO_LSGD:
            m->W[l] = AT(void *, in * out * 4u);
            m->b[l] = AT(void *, out * 4u);
            m->act[l] = AT(void *, out * 4u);
            break;
        case ALGO_SGD:
        default:
            m->W[l] = AT(void *, in * out * 4u);
            m->b[l] = AT(void *, out * 4u);
            m->act[l] = AT(void *, out * 4u);
            m->delta[l] = AT(void *, out * 4u);
            m->gW[l] = AT(void *, in * out * 4u);
            m->gb[l] = AT(void *, out * 4u);
            break;
        }
    }
    switch (m->algo) {
    case ALGO_TIFED:
        m->err = AT(int16_t *, batch * m->dims[L] * 2u);
        m->delta[0] = AT(void *, batch * widest * 4u);
        m->acc = AT(void *, (uint64_t)widest * 8u);
        break;
    case ALGO_LSGD_Q8:
        m->delta[0] = AT(void *, (uint64_t)widest * 4u);
        m->delta[1] = AT(void *, (uint64_t)widest * 4u);
        m->acc = AT(void *, (uint64_t)widest * 4u);
        m->q8state = AT(uint8_t *, 8u);
        break;
    case ALGO_LSGD:
        m->delta[0] = AT(void *, (uint64_t)widest * 4u);
        m->delta[1] = AT(void *, (uint64_t)widest * 4u);
        m->xin = AT(float *, (uint64_t)m->dims[0] * 4u);
        break;
    default:
        m->xin = AT(float *, (uint64_t)m->dims[0] * 4u);
        break;
    }
    m->X = AT(uint8_t *, (uint64_t)m->capacity * model_x_row_bytes(m));
    m->Y = AT(uint8_t *, (uint64_t)m->capacity * model_y_row_bytes(m));
    if (m->shared > 0u) {
        const uint64_t width = m->algo == ALGO_LSGD_Q8 ? 1u : 4u;
        for (unsigned l = 0; l < m->shared; ++l) {
            m->thW[l] = AT(void *, (uint64_t)m->dims[l] * m->dims[l + 1u] * width);
            m->thb[l] = AT(void *, (uint64_t)m->dims[l + 1u] * width);
        }
        m->hist = AT(uint32_t *, 256u * 4u);
    }
#undef AT
    return off;
}

/* Turn the offsets (stored +1 so that NULL stays NULL) into arena pointers. */
#define RELOC(p)                                                                               \
    do {                                                                                       \
        if ((p) != NULL) {                                                                     \
            (p) = (void *)(g_arena + ((uintptr_t)(p) - 1u));                                   \
        }                                                                                      \
    } while (0)

static void relocate(model_t *m)
{
    for (unsigned l = 0; l < MAX_LAYERS; ++l) {
        RELOC(m->W[l]);
        RELOC(m->b[l]);
        RELOC(m->B[l]);
        RELOC(m->fmt[l]);
        RELOC(m->act[l]);
        RELOC(m->ginv[l]);
        RELOC(m->delta[l]);
        RELOC(m->gW[l]);
        RELOC(m->gb[l]);
        RELOC(m->thW[l]);
        RELOC(m->thb[l]);
    }
    RELOC(m->hist);
    RELOC(m->err);
    RELOC(m->acc);
    RELOC(m->xin);
    RELOC(m->q8state);
    RELOC(m->X);
    RELOC(m->Y);
}

uint64_t model_plan_bytes(const model_t *shape)
{
    model_t m = *shape;
    return plan(&m);
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

int model_setup(const uint8_t *p, size_t n)
{
    if (n < 10u) {
        return ERR_BAD_ARG;
    }
    model_t m;
    memset(&m, 0, sizeof m);
    m.algo = p[0];
    m.nlayers = p[1];
    m.loss = p[2];
    m.target = p[3];
    m.act_shift = p[4];
    m.shared = p[5];
    m.capacity = rd16(p + 6);
    m.max_batch = rd16(p + 8);
    if (m.nlayers < 1u || m.nlayers > MAX_LAYERS) {
        return ERR_BAD_ARG;
    }
    /* The sample format is an optional last byte, so that every earlier SETUP stays valid. */
    const size_t base = 10u + 2u * (m.nlayers + 1u) + m.nlayers;
    if (n != base && n != base + 1u) {
        return ERR_BAD_ARG;
    }
    m.format = n == base + 1u ? p[base] : 0u;
    if (m.algo < ALGO_TIFED || m.algo > ALGO_LSGD_Q8) {
        return ERR_BAD_ARG;
    }
    if (!(KERNELS_BUILT & (1u << m.algo))) {
        return ERR_UNSUPPORTED;
    }
    if (m.capacity < 1u || m.max_batch < 1u || m.max_batch > m.capacity) {
        return ERR_BAD_ARG;
    }
    for (unsigned l = 0; l <= m.nlayers; ++l) {
        m.dims[l] = rd16(p + 10u + 2u * l);
        if (m.dims[l] < 1u) {
            return ERR_BAD_ARG;
        }
    }
    if (!(m.format & FORMAT_FLOAT_TARGETS) && m.dims[m.nlayers] > 255u) { /* u8 labels */
        return ERR_BAD_ARG;
    }
    for (unsigned l = 0; l < m.nlayers; ++l) {
        m.acts[l] = p[10u + 2u * (m.nlayers + 1u) + l];
        if (m.acts[l] > ACT_SOFTMAX || (m.acts[l] == ACT_SOFTMAX && l + 1u != m.nlayers)) {
            return ERR_BAD_ARG;
        }
    }
    /* Top-P works on float and int8 weights; TIFeD uploads whole layers. */
    if (m.shared > m.nlayers || (m.shared > 0u && m.algo == ALGO_TIFED)) {
        return ERR_BAD_ARG;
    }
    if (m.loss > LOSS_MSE) {
        return ERR_BAD_ARG;
    }
    /* Float samples feed the float kernels only; float targets are regression targets (MSE). */
    if ((m.format & ~(unsigned)FORMAT_ALL) != 0u ||
        (m.format != 0u && m.algo != ALGO_LSGD && m.algo != ALGO_SGD) ||
        ((m.format & FORMAT_FLOAT_TARGETS) && m.loss != LOSS_MSE)) {
        return ERR_BAD_ARG;
    }
    if (m.algo == ALGO_TIFED && (m.target < 1u || m.target > 127u || m.act_shift > 16u)) {
        return ERR_BAD_ARG;
    }
    if (m.algo == ALGO_LSGD_Q8) {
        /* Tables exist for tanh and sigmoid; the output is sigmoid + BCE (y - t deltas), and
         * widths up to 1024 keep every int32 accumulator in range. */
        for (unsigned l = 0; l < m.nlayers; ++l) {
            const uint8_t act = m.acts[l];
            if ((act != ACT_TANH && act != ACT_SIGMOID) ||
                (l + 1u == m.nlayers && act != ACT_SIGMOID)) {
                return ERR_BAD_ARG;
            }
        }
        for (unsigned l = 0; l <= m.nlayers; ++l) {
            if (m.dims[l] > 1024u) {
                return ERR_BAD_ARG;
            }
        }
        if (m.loss != LOSS_BCE) {
            return ERR_BAD_ARG;
        }
    }
    if (m.algo != ALGO_TIFED && m.max_batch > 1u && m.algo != ALGO_SGD) {
        return ERR_BAD_ARG; /* per-sample algorithms */
    }
    /* Refuse a plan that exceeds the arena before touching the live model. */
    const uint64_t need = plan(&m);
    if (need > ARENA_BYTES) {
        return ERR_NO_MEMORY;
    }
    relocate(&m);
    memset(g_arena, 0, (size_t)need);
    m.used = (size_t)need;
    m.ready = 1u;
    g_model = m;
    topp_reset();
    return 0;
}

int model_tensor(uint8_t id, uint8_t **ptr, size_t *bytes, uint8_t *elem)
{
    const model_t *m = &g_model;
    if (!m->ready) {
        return ERR_NOT_READY;
    }
    if (id == TENSOR_X) {
        *ptr = m->X;
        *bytes = (size_t)(m->capacity * model_x_row_bytes(m));
        *elem = (m->format & FORMAT_FLOAT_INPUTS) ? ELEM_F32 : ELEM_U8;
        return 0;
    }
    if (id == TENSOR_Q8STATE) {
        if (m->q8state == NULL) {
            return ERR_BAD_ARG;
        }
        *ptr = m->q8state;
        *bytes = 8u;
        *elem = ELEM_U8;
        return 0;
    }
    if (id == TENSOR_Y) {
        *ptr = m->Y;
        *bytes = (size_t)(m->capacity * model_y_row_bytes(m));
        *elem = (m->format & FORMAT_FLOAT_TARGETS) ? ELEM_F32 : ELEM_U8;
        return 0;
    }
    const unsigned l = id / 4u, k = id % 4u;
    if (l >= m->nlayers) {
        return ERR_BAD_ARG;
    }
    const size_t in = m->dims[l], out = m->dims[l + 1u];
    const size_t width = m->algo == ALGO_LSGD_Q8 ? 1u : 4u;
    *elem = m->algo == ALGO_LSGD_Q8 ? ELEM_I8 : (m->algo == ALGO_TIFED ? ELEM_I32 : ELEM_F32);
    switch (k) {
    case 0:
        *ptr = m->W[l];
        *bytes = in * out * width;
        return 0;
    case 1:
        *ptr = m->b[l];
        *bytes = out * width;
        return 0;
    case 2:
        if (m->B[l] == NULL) {
            return ERR_BAD_ARG;
        }
        *ptr = (uint8_t *)m->B[l];
        *bytes = (size_t)m->dims[m->nlayers] * out * 2u;
        *elem = ELEM_I16;
        return 0;
    default:
        if (m->fmt[l] == NULL) {
            return ERR_BAD_ARG;
        }
        *ptr = (uint8_t *)m->fmt[l];
        *bytes = 2u;
        *elem = ELEM_I8;
        return 0;
    }
}
