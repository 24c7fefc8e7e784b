/* The model held in the static arena: its shape, tensors and working buffers.
 *
 * SETUP plans every buffer an algorithm needs, refuses the plan if it exceeds the arena (nothing
 * changes then), and otherwise lays it out in the arena with all tensors zeroed.
 */
#ifndef EDDL_MODEL_H
#define EDDL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

#ifndef ARENA_BYTES
#define ARENA_BYTES (64u * 1024u)
#endif

/* Element kinds of a tensor, as LOAD/READ see them. */
enum { ELEM_U8 = 1, ELEM_I8 = 2, ELEM_I16 = 3, ELEM_I32 = 4, ELEM_F32 = 5 };

typedef struct {
    uint8_t ready;
    uint8_t algo;
    uint8_t nlayers;
    uint8_t loss;
    uint8_t target;    /* TIFeD one-hot scale */
    uint8_t act_shift; /* TIFeD: v = z // (2^act_shift * fan_in) */
    uint8_t shared;    /* layers 0..shared-1 take part in top-P (topp.c); 0: none */
    uint8_t format;    /* FORMAT_* bits: float32 inputs, float32 targets; 0: pixels, labels */
    uint16_t capacity;  /* samples the X/Y buffer holds */
    uint16_t max_batch; /* widest mini-batch TRAIN may ask for */
    uint16_t dims[MAX_LAYERS + 1u];
    uint8_t acts[MAX_LAYERS];
    uint16_t widest;
    size_t used; /* arena bytes taken */
    /* Tensors (the element type depends on algo). */
    void *W[MAX_LAYERS];
    void *b[MAX_LAYERS];
    int16_t *B[MAX_LAYERS]; /* TIFeD feedback matrices, hidden layers only */
    int8_t *fmt[MAX_LAYERS]; /* lsgd-q8 per-layer {fw, fb} */
    uint8_t *q8state;        /* lsgd-q8 {u32 seed, u32 counter} */
    uint8_t *X; /* capacity rows of dims[0] uint8 pixels or float32 features */
    uint8_t *Y; /* capacity u8 labels, or rows of dims[L] float32 targets */
    /* Working buffers. */
    void *act[MAX_LAYERS];     /* per-layer outputs (batch rows for TIFeD / SGD) */
    uint8_t *ginv[MAX_LAYERS]; /* TIFeD gradInv per output */
    int16_t *err;              /* TIFeD error rows */
    void *delta[MAX_LAYERS];   /* deltas (ping-pong pair for L-SGD, per layer for SGD) */
    void *acc;                 /* int64 accumulators (TIFeD) */
    void *gW[MAX_LAYERS];      /* SGD gradient buffers */
    void *gb[MAX_LAYERS];
    float *xin;                /* float input row */
    /* Top-P (shared > 0): theta, a copy of the shared layers, and a radix histogram. */
    void *thW[MAX_LAYERS];
    void *thb[MAX_LAYERS];
    uint32_t *hist;
} model_t;

extern model_t g_model;
extern uint8_t g_arena[ARENA_BYTES];

/* Parse and apply a SETUP payload; returns 0 or an ERR_* code (model unchanged on error). */
int model_setup(const uint8_t *p, size_t n);
/* Locate a tensor: returns 0 and fills ptr/bytes/elem, or an ERR_* code. */
int model_tensor(uint8_t id, uint8_t **ptr, size_t *bytes, uint8_t *elem);
/* Bytes a configuration needs (also used by the size report). */
uint64_t model_plan_bytes(const model_t *shape);
/* Bytes of one sample's inputs and of its target in the X and Y buffers. */
uint64_t model_x_row_bytes(const model_t *m);
uint64_t model_y_row_bytes(const model_t *m);

#endif
