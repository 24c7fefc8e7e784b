/* Training kernels. Each works on g_model in place; the arguments were validated by the caller. */
#ifndef EDDL_KERNELS_H
#define EDDL_KERNELS_H

#include <stdint.h>

#include "model.h"

#ifndef WITH_TIFED
#define WITH_TIFED 1
#endif
#ifndef WITH_FLOAT
#define WITH_FLOAT 1
#endif
#ifndef WITH_Q8
#define WITH_Q8 1
#endif

#define KERNELS_BUILT                                                                          \
    ((WITH_TIFED ? (1u << ALGO_TIFED) : 0u) |                                                  \
     (WITH_FLOAT ? ((1u << ALGO_LSGD) | (1u << ALGO_SGD)) : 0u) |                              \
     (WITH_Q8 ? (1u << ALGO_LSGD_Q8) : 0u))

typedef struct {
    uint16_t n;        /* samples from the start of X/Y */
    uint16_t batch;    /* mini-batch (TIFeD, SGD); 1 for per-sample algorithms */
    uint8_t epochs;
    uint8_t layer;     /* LAYER_ALL or the one layer to update (TIFeD single-layer) */
    uint32_t lr_inv;   /* TIFeD: W -= (x^T d) // lr_inv; lsgd-q8: learning-rate shift */
    float lr;          /* float algorithms */
} train_args_t;

/* TIFeD integer DFA (tifed.c). */
void tifed_train(const train_args_t *a);
void tifed_predict(uint16_t n, uint8_t *labels);
/* Float L-SGD (fused per-sample) and mini-batch SGD with gradient buffers (floatnet.c). */
void lsgd_train(const train_args_t *a);
void sgd_train(const train_args_t *a);
void float_predict(uint16_t n, uint8_t *labels);
/* int8 L-SGD for fine-tuning (lsgd_q8.c). */
void q8_train(const train_args_t *a);
void q8_predict(uint16_t n, uint8_t *labels);
/* 0 if every layer's {fw, fb} is usable (0..14, fb <= fw + 7), else ERR_BAD_ARG. */
int q8_check_formats(void);

#endif
