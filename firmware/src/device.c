/* Frame reception, replay suppression by sequence number, and the message handlers.
 *
 * The device remembers the last SEQ_WINDOW sequence numbers it executed (see "replay window"
 * below), each with the CRC-32 of its request frame and, for every state-changing request, its
 * short reply: a retransmitted or replayed request gets its reply again and is never applied
 * twice; a remembered number with a different command, or a number older than the window, is
 * refused. Link errors (bad CRC, bad COBS, oversized) are answered with ERROR but never reach a
 * handler and never touch the window. Handlers validate the whole request before changing
 * anything, so an ERROR reply means no state changed.
 */
#include "device.h"

#include <string.h>

#include "cobs.h"
#include "crc32.h"
#include "hal.h"
#include "kernels.h"
#include "model.h"
#include "proto.h"
#include "topp.h"

typedef struct {
    uint32_t samples;
    uint64_t kernel_ticks;
    uint32_t last_ticks;
    uint32_t train_calls;
    uint32_t frames_ok;
    uint32_t frames_bad;
    uint32_t dups;
    uint32_t errors;
} stats_t;

static stats_t s_stats;
static uint8_t s_rx[MAX_ENCODED_FRAME];
static size_t s_rx_len;
static uint8_t s_rx_overflow;
/* Decoding never lengthens: sized to s_rx, so an over-long frame is measured, not overflowed. */
static uint8_t s_frame[MAX_ENCODED_FRAME];
static uint8_t s_reply[MAX_RAW_FRAME]; /* doubles as the cache of the last reply */
static size_t s_reply_len;
static uint8_t s_have_last;
static uint16_t s_last_seq;
static uint8_t s_tx[MAX_ENCODED_FRAME + 1u];

/* ---- replay window ----
 *
 * An anti-replay window as in IPsec (RFC 4303, 3.4.3), over u16 numbers compared in serial-number
 * arithmetic (RFC 1982): s_top is the newest number executed; a number up to 32767 ahead of it is
 * new; one of the SEQ_WINDOW numbers ending at s_top is looked up in its slot (seen: same hash ->
 * the kept reply, another hash -> ERR_SEQ_REUSED; not seen, because later frames overtook it ->
 * new); anything older is refused with ERR_STALE_SEQ, as it may have been executed already.
 * The hash is the frame's CRC-32, already computed and checked on arrival: it costs nothing, and
 * it tells any two different commands of one sequence number apart except with probability
 * 2^-32 (always, for differences within 32 bits). It is no defence against a forger, and nothing
 * on this link is: the serial line carries no authentication (docs/reliability.md). */
typedef struct {
    uint32_t hash;      /* CRC-32 of the request frame */
    uint16_t seq;
    uint8_t used;
    uint8_t reply_type; /* 0: reply not kept (a read-only request, executed again on replay) */
    uint8_t reply_len;
    uint8_t reply[KEPT_REPLY_BYTES];
} seen_t;

typedef char seq_window_is_a_power_of_two[(SEQ_WINDOW & (SEQ_WINDOW - 1u)) == 0u &&
                                                  SEQ_WINDOW >= 2u && SEQ_WINDOW <= 256u
                                              ? 1
                                              : -1];

static seen_t s_seen[SEQ_WINDOW];
static uint16_t s_top;
static uint8_t s_have_top;

static void put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void put32(uint8_t *p, uint32_t v)
{
    put16(p, v);
    put16(p + 2, v >> 16);
}
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) | ((uint32_t)get16(p + 2) << 16); }

/* Finish the frame in buf (header + len payload bytes), COBS-encode and send it. */
static size_t seal_and_send(uint8_t *buf, uint8_t type, uint16_t seq, size_t len)
{
    buf[0] = PROTO_VERSION;
    buf[1] = type;
    put16(buf + 2, seq);
    put16(buf + 4, (uint32_t)len);
    put32(buf + HEADER_BYTES + len, crc32(buf, HEADER_BYTES + len));
    const size_t raw = HEADER_BYTES + len + CRC_BYTES;
    const size_t n = cobs_encode(buf, raw, s_tx);
    s_tx[n] = 0u;
    hal_write(s_tx, n + 1u);
    return raw;
}

static void resend_cached(void)
{
    const size_t n = cobs_encode(s_reply, s_reply_len, s_tx);
    s_tx[n] = 0u;
    hal_write(s_tx, n + 1u);
}

static void link_error(uint8_t code, uint16_t seq)
{
    uint8_t buf[HEADER_BYTES + 4u + CRC_BYTES];
    s_stats.frames_bad++;
    buf[HEADER_BYTES] = code;
    buf[HEADER_BYTES + 1] = 0u;
    put16(buf + HEADER_BYTES + 2, 0u);
    (void)seal_and_send(buf, MSG_ERROR, seq, 4u);
}

/* An application ERROR that is neither kept nor put in the reply cache (replay refusals). */
static void refuse(uint8_t code, uint8_t type, uint16_t seq)
{
    uint8_t buf[HEADER_BYTES + 4u + CRC_BYTES];
    s_stats.errors++;
    buf[HEADER_BYTES] = code;
    buf[HEADER_BYTES + 1] = type;
    put16(buf + HEADER_BYTES + 2, 0u);
    (void)seal_and_send(buf, MSG_ERROR, seq, 4u);
}

/* ---- handlers: write the reply payload to out, return its length or -ERR_* ---- */

static long on_hello(const uint8_t *p, size_t n, uint8_t *out)
{
    (void)p;
    if (n != 0u) {
        return -ERR_BAD_ARG;
    }
    static const char name[] = BOARD_NAME;
    const size_t name_len = sizeof name - 1u;
    out[0] = PROTO_VERSION;
    out[1] = FW_VERSION_MAJOR;
    out[2] = FW_VERSION_MINOR;
    out[3] = FW_VERSION_PATCH;
    put32(out + 4, RAM_BYTES);
    put32(out + 8, FLASH_BYTES);
    put32(out + 12, ARENA_BYTES);
    put16(out + 16, MAX_PAYLOAD);
    put16(out + 18, KERNELS_BUILT);
    put32(out + 20, hal_tick_hz());
    out[24] = MAX_LAYERS;
    out[25] = (uint8_t)name_len;
    memcpy(out + 26, name, name_len);
    /* The replay window, so that a driver continues after the newest number this device has
     * executed instead of guessing one the window might refuse. */
    put16(out + 26 + name_len, s_top);
    out[28 + name_len] = (uint8_t)SEQ_WINDOW;
    out[29 + name_len] = (uint8_t)((s_have_top ? HELLO_HAS_SEQ : 0u) |
                                   (WITH_FLOAT ? HELLO_FLOAT_SAMPLES : 0u));
    return (long)(30u + name_len);
}

static long on_setup(const uint8_t *p, size_t n, uint8_t *out)
{
    const int err = model_setup(p, n);
    if (err) {
        return -err;
    }
    put32(out, (uint32_t)g_model.used);
    put32(out + 4, ARENA_BYTES);
    return 8;
}

static int finite_f32(const uint8_t *p)
{
    return ((p[3] & 0x7Fu) != 0x7Fu) || ((p[2] & 0x80u) == 0u);
}

static long on_load(const uint8_t *p, size_t n, uint8_t *out)
{
    if (n < 6u) {
        return -ERR_BAD_ARG;
    }
    uint8_t *dst;
    size_t bytes;
    uint8_t elem;
    const int err = model_tensor(p[0], &dst, &bytes, &elem);
    if (err) {
        return -err;
    }
    const uint32_t off = get32(p + 1);
    const size_t len = n - 5u;
    if (off > bytes || len > bytes - off) {
        return -ERR_BAD_ARG;
    }
    const size_t width = elem == ELEM_I16 ? 2u : (elem >= ELEM_I32 ? 4u : 1u);
    if ((off % width) != 0u || (len % width) != 0u) {
        return -ERR_BAD_ARG;
    }
    if (elem == ELEM_F32) {
        for (size_t k = 0; k < len; k += 4u) {
            if (!finite_f32(p + 5 + k)) {
                return -ERR_NOT_FINITE;
            }
        }
    }
    memcpy(dst + off, p + 5, len);
    put32(out, off + (uint32_t)len);
    return 4;
}

static long on_read(const uint8_t *p, size_t n, uint8_t *out)
{
    if (n != 7u) {
        return -ERR_BAD_ARG;
    }
    uint8_t *src;
    size_t bytes;
    uint8_t elem;
    const int err = model_tensor(p[0], &src, &bytes, &elem);
    if (err) {
        return -err;
    }
    const uint32_t off = get32(p + 1);
    const size_t len = get16(p + 5);
    if (len > MAX_PAYLOAD || off > bytes || len > bytes - off) {
        return -ERR_BAD_ARG;
    }
    memcpy(out, src + off, len);
    return (long)len;
}

static long on_train(const uint8_t *p, size_t n, uint8_t *out)
{
    model_t *m = &g_model;
    if (n != 16u) {
        return -ERR_BAD_ARG;
    }
    if (!m->ready) {
        return -ERR_NOT_READY;
    }
    train_args_t a;
    a.n = get16(p);
    a.batch = get16(p + 2);
    a.epochs = p[4];
    a.layer = p[5];
    a.lr_inv = get32(p + 8);
    const uint32_t lr_bits = get32(p + 12);
    memcpy(&a.lr, &lr_bits, sizeof a.lr);
    if (a.n < 1u || a.n > m->capacity || a.epochs < 1u) {
        return -ERR_BAD_ARG;
    }
    if (a.batch < 1u || a.batch > m->max_batch) {
        return -ERR_BAD_ARG;
    }
    if (a.layer != LAYER_ALL &&
        (a.layer >= m->nlayers || (m->algo != ALGO_TIFED && m->algo != ALGO_LSGD_Q8))) {
        return -ERR_BAD_ARG;
    }
    if (m->algo == ALGO_TIFED) {
        if (a.lr_inv < 1u) {
            return -ERR_BAD_ARG;
        }
    } else if (m->algo == ALGO_LSGD_Q8) {
#if WITH_Q8
        if (a.lr_inv > 10u || a.batch != 1u || q8_check_formats() != 0) {
            return -ERR_BAD_ARG; /* lr_inv carries the learning-rate shift here */
        }
#endif
    } else if (!(a.lr > 0.0f && a.lr < 1.0e30f)) { /* also refuses NaN */
        return -ERR_BAD_ARG;
    }
    const unsigned classes = m->dims[m->nlayers];
    for (uint16_t s = 0; s < a.n && !(m->format & FORMAT_FLOAT_TARGETS); ++s) {
        if (m->Y[s] >= classes) {
            return -ERR_BAD_ARG;
        }
    }
    const uint32_t irq = hal_irq_mask();
    const uint32_t t0 = hal_ticks();
    switch (m->algo) {
#if WITH_TIFED
    case ALGO_TIFED:
        tifed_train(&a);
        break;
#endif
#if WITH_FLOAT
    case ALGO_LSGD:
        lsgd_train(&a);
        break;
    case ALGO_SGD:
        sgd_train(&a);
        break;
#endif
#if WITH_Q8
    case ALGO_LSGD_Q8:
        q8_train(&a);
        break;
#endif
    default:
        break;
    }
    const uint32_t ticks = hal_ticks() - t0;
    hal_irq_restore(irq);
    const uint32_t done = (uint32_t)a.n * a.epochs;
    s_stats.samples += done;
    s_stats.kernel_ticks += ticks;
    s_stats.last_ticks = ticks;
    s_stats.train_calls++;
    put32(out, done);
    put32(out + 4, ticks);
    return 8;
}

static long on_predict(const uint8_t *p, size_t n, uint8_t *out)
{
    model_t *m = &g_model;
    if (n != 2u) {
        return -ERR_BAD_ARG;
    }
    if (!m->ready) {
        return -ERR_NOT_READY;
    }
    const uint16_t count = get16(p);
    if (count < 1u || count > m->capacity) {
        return -ERR_BAD_ARG;
    }
    if (m->format & FORMAT_FLOAT_TARGETS) {
        return -ERR_BAD_ARG; /* PREDICT answers class labels; a regression model has none */
    }
#if MAX_PAYLOAD < 0xFFFFu /* otherwise every u16 count fits the reply */
    if (count > MAX_PAYLOAD) {
        return -ERR_BAD_ARG;
    }
#endif
#if WITH_Q8
    if (m->algo == ALGO_LSGD_Q8 && q8_check_formats() != 0) {
        return -ERR_BAD_ARG;
    }
#endif
    switch (m->algo) {
#if WITH_TIFED
    case ALGO_TIFED:
        tifed_predict(count, out);
        break;
#endif
#if WITH_FLOAT
    case ALGO_LSGD:
    case ALGO_SGD:
        float_predict(count, out);
        break;
#endif
#if WITH_Q8
    case ALGO_LSGD_Q8:
        q8_predict(count, out);
        break;
#endif
    default:
        break;
    }
    return count;
}

static long on_stats(const uint8_t *p, size_t n, uint8_t *out)
{
    (void)p;
    if (n != 0u) {
        return -ERR_BAD_ARG;
    }
    put32(out, s_stats.samples);
    put32(out + 4, (uint32_t)s_stats.kernel_ticks);
    put32(out + 8, (uint32_t)(s_stats.kernel_ticks >> 32));
    put32(out + 12, s_stats.last_ticks);
    put32(out + 16, s_stats.train_calls);
    put32(out + 20, s_stats.frames_ok);
    put32(out + 24, s_stats.frames_bad);
    put32(out + 28, s_stats.dups);
    put32(out + 32, s_stats.errors);
    put32(out + 36, (uint32_t)g_model.used);
    return 40;
}

#define LINKTEST_MAX (16u * 1024u * 1024u)

/* Raw link rate: after a "ready" reply, swallow n raw bytes (dir 0), or send n raw bytes
 * (dir 1); then a "done" reply. Used by the benchmark only, never cached. */
static void on_linktest(const uint8_t *p, size_t n, uint16_t seq)
{
    uint8_t *out = s_reply + HEADER_BYTES;
    if (n != 5u || p[0] > 1u || get32(p + 1) > LINKTEST_MAX) {
        out[0] = ERR_BAD_ARG;
        out[1] = MSG_LINKTEST;
        put16(out + 2, 0u);
        s_stats.errors++;
        (void)seal_and_send(s_reply, MSG_ERROR, seq, 4u);
        return;
    }
    const uint32_t count = get32(p + 1);
    if (p[0] == 0u) {
        out[0] = 0u;
        (void)seal_and_send(s_reply, MSG_LINKTEST | REPLY_BIT, seq, 1u);
        for (uint32_t k = 0; k < count;) {
            const size_t got = hal_skip(count - k);
            if (got == 0u) {
                return;
            }
            k += (uint32_t)got;
        }
    } else {
        /* The transmit buffer is the fill: raw bursts go out in writes as large as a frame's,
         * so the raw rate is not held back by more write calls than a framed READ makes. */
        memset(s_tx, 0x55, sizeof s_tx);
        for (uint32_t k = 0; k < count; k += (uint32_t)sizeof s_tx) {
            const uint32_t chunk = count - k < sizeof s_tx ? count - k : (uint32_t)sizeof s_tx;
            hal_write(s_tx, chunk);
        }
    }
    out[0] = 1u;
    put32(out + 1, count);
    (void)seal_and_send(s_reply, MSG_LINKTEST | REPLY_BIT, seq, 5u);
}

static int read_only(uint8_t type)
{
    return type == MSG_READ || type == MSG_STATS || type == MSG_PREDICT;
}

/* Send a kept reply again, byte for byte as the first time. */
static void resend_kept(const seen_t *e, uint16_t seq)
{
    uint8_t buf[HEADER_BYTES + KEPT_REPLY_BYTES + CRC_BYTES];
    memcpy(buf + HEADER_BYTES, e->reply, e->reply_len);
    (void)seal_and_send(buf, e->reply_type, seq, e->reply_len);
}

static void dispatch(uint8_t type, uint16_t seq, const uint8_t *p, size_t n, uint32_t hash)
{
    if (type == MSG_LINKTEST) {
        s_have_last = 0u;
        on_linktest(p, n, seq);
        return;
    }
    seen_t *e = &s_seen[seq % SEQ_WINDOW];
    uint8_t replay = 0u;
    /* HELLO changes nothing and opens every session: always executed, never remembered. */
    if (type != MSG_HELLO && s_have_top) {
        const uint16_t ahead = (uint16_t)(seq - s_top);
        if (ahead == 0u || ahead >= 0x8000u) { /* not newer than the newest */
            if ((uint16_t)(s_top - seq) >= SEQ_WINDOW) {
                refuse(ERR_STALE_SEQ, type, seq);
                return;
            }
            if (e->used && e->seq == seq) {
                if (e->hash != hash) {
                    refuse(ERR_SEQ_REUSED, type, seq);
                    return;
                }
                s_stats.dups++;
                if (s_have_last && s_last_seq == seq) {
                    resend_cached();
                    return;
                }
                if (e->reply_type != 0u) {
                    resend_kept(e, seq);
                    return;
                }
                /* A reply too long to keep (TOPP's records) is refused, never executed again. */
                if (!read_only(type)) {
                    refuse(ERR_STALE_SEQ, type, seq);
                    return;
                }
                replay = 1u; /* a read-only request: answering it again changes nothing */
            }
        }
    }
    uint8_t *out = s_reply + HEADER_BYTES;
    long r;
    switch (type) {
    case MSG_HELLO:
        r = on_hello(p, n, out);
        break;
    case MSG_SETUP:
        r = on_setup(p, n, out);
        break;
    case MSG_LOAD:
        r = on_load(p, n, out);
        break;
    case MSG_TRAIN:
        r = on_train(p, n, out);
        break;
    case MSG_READ:
        r = on_read(p, n, out);
        break;
    case MSG_STATS:
        r = on_stats(p, n, out);
        break;
    case MSG_PREDICT:
        r = on_predict(p, n, out);
        break;
    case MSG_TOPP:
        r = topp_request(p, n, out);
        break;
    default:
        r = -ERR_UNKNOWN_TYPE;
        break;
    }
    uint8_t rtype;
    size_t len;
    if (r < 0) {
        s_stats.errors++;
        out[0] = (uint8_t)(-r);
        out[1] = type;
        put16(out + 2, 0u);
        rtype = MSG_ERROR;
        len = 4u;
    } else {
        rtype = (uint8_t)(type | REPLY_BIT);
        len = (size_t)r;
        if (type == MSG_LOAD || type == MSG_TRAIN) {
            topp_invalidate(); /* the weights a selection described may have changed */
        }
    }
    s_reply_len = seal_and_send(s_reply, rtype, seq, len);
    s_have_last = 1u;
    s_last_seq = seq;
    if (type == MSG_HELLO) {
        s_have_last = 0u; /* a HELLO's seq is not remembered: do not answer it from the cache */
        return;
    }
    if (replay) {
        return;
    }
    e->used = 1u;
    e->seq = seq;
    e->hash = hash;
    e->reply_type = 0u;
    e->reply_len = 0u;
    if (len <= KEPT_REPLY_BYTES) {
        e->reply_type = rtype;
        e->reply_len = (uint8_t)len;
        memcpy(e->reply, out, len);
    }
    const uint16_t ahead = (uint16_t)(seq - s_top);
    if (!s_have_top || (ahead != 0u && ahead < 0x8000u)) {
        s_top = seq;
        s_have_top = 1u;
    }
}

static void on_frame(void)
{
    if (s_rx_overflow) {
        s_rx_overflow = 0u;
        link_error(ERR_OVERSIZED, 0xFFFFu);
        return;
    }
    const long n = cobs_decode(s_rx, s_rx_len, s_frame);
    if (n < 0) {
        link_error(ERR_BAD_FRAME, 0xFFFFu);
        return;
    }
    if ((size_t)n > MAX_RAW_FRAME) {
        link_error(ERR_OVERSIZED, 0xFFFFu);
        return;
    }
    if ((size_t)n < HEADER_BYTES + CRC_BYTES) {
        link_error(ERR_BAD_FRAME, 0xFFFFu);
        return;
    }
    const size_t body = (size_t)n - CRC_BYTES;
    if (crc32(s_frame, body) != get32(s_frame + body)) {
        link_error(ERR_BAD_CRC, 0xFFFFu);
        return;
    }
    const uint16_t seq = get16(s_frame + 2);
    if (get16(s_frame + 4) != body - HEADER_BYTES) {
        link_error(ERR_BAD_FRAME, seq);
        return;
    }
    if (s_frame[0] != PROTO_VERSION) {
        link_error(ERR_BAD_VERSION, seq);
        return;
    }
    s_stats.frames_ok++;
    dispatch(s_frame[1], seq, s_frame + HEADER_BYTES, body - HEADER_BYTES, get32(s_frame + body));
}

void device_feed(uint8_t byte)
{
    if (byte == 0u) {
        if (s_rx_len > 0u || s_rx_overflow) {
            on_frame();
        }
        s_rx_len = 0u;
        return;
    }
    if (s_rx_len < sizeof s_rx) {
        s_rx[s_rx_len++] = byte;
    } else {
        s_rx_overflow = 1u;
    }
}

size_t device_feed_run(const uint8_t *p, size_t n)
{
    const uint8_t *zero = memchr(p, 0, n);
    const size_t len = zero != NULL ? (size_t)(zero - p) : n;
    if (!s_rx_overflow) {
        if (len <= sizeof s_rx - s_rx_len) {
            memcpy(s_rx + s_rx_len, p, len);
            s_rx_len += len;
        } else {
            s_rx_overflow = 1u;
        }
    }
    return len;
}

void device_link_reset(void)
{
    s_rx_len = 0u;
    s_rx_overflow = 0u;
}

void device_run(void)
{
    for (;;) {
        const int c = hal_getc();
        if (c < 0) {
            device_link_reset();
            return;
        }
        device_feed((uint8_t)c);
    }
}
