/* Float32 training (docs/architecture.md#sgd-and-l-sgd): L-SGD and the mini-batch SGD baseline.
 *
 * L-SGD keeps only each layer's outputs and two delta buffers sized to the widest layer: the
 * backward pass computes layer l-1's delta with the old W(l) row by row and updates that row at
 * once. SGD ("Algorithm 1") keeps a gradient buffer per weight and bias, a delta per layer, and
 * applies the mean gradient after the batch's backward passes. Inputs are pixels / 255, or
 * float32 features as they are; targets are class labels (one-hot) or float32 regression
 * targets (the sample format chosen at SETUP).
 */
#include <math.h>
#include <string.h>

#include "kernels.h"

#if WITH_FLOAT

static float activate_one(uint8_t act, float z)
{
    switch (act) {
    case ACT_TANH:
        return tanhf(z);
    case ACT_SIGMOID:
        return 1.0f / (1.0f + expf(-z));
    case ACT_RELU:
        return z > 0.0f ? z : 0.0f;
    default:
        return z;
    }
}

/* Derivative of the activation from its output y (pre-activations are not kept). */
static float slope(uint8_t act, float y)
{
    switch (act) {
    case ACT_TANH:
        return 1.0f - y * y;
    case ACT_SIGMOID:
        return y * (1.0f - y);
    case ACT_RELU:
        return y > 0.0f ? 1.0f : 0.0f;
    default:
        return 1.0f;
    }
}

/* Sample s into xin: pixels / 255, or float32 features as they are. */
static void load_input(uint16_t s)
{
    model_t *m = &g_model;
    if (m->format & FORMAT_FLOAT_INPUTS) {
        const size_t row = (size_t)m->dims[0] * sizeof(float);
        memcpy(m->xin, m->X + (size_t)s * row, row);
        return;
    }
    const uint8_t *x = m->X + (size_t)s * m->dims[0];
    for (unsigned i = 0; i < m->dims[0]; ++i) {
        m->xin[i] = (float)x[i] / 255.0f;
    }
}

static void forward(void)
{
    model_t *m = &g_model;
    for (unsigned l = 0; l < m->nlayers; ++l) {
        const unsigned in = m->dims[l], out = m->dims[l + 1u];
        const float *x = l == 0u ? m->xin : (const float *)m->act[l - 1u];
        const float *W = (const float *)m->W[l];
        float *y = (float *)m->act[l];
        memcpy(y, m->b[l], out * sizeof(float));
        for (unsigned i = 0; i < in; ++i) {
            const float xi = x[i];
            const float *row = W + (size_t)i * out;
            for (unsigned j = 0; j < out; ++j) {
                y[j] += xi * row[j];
            }
        }
        if (m->acts[l] == ACT_SOFTMAX) {
            float top = y[0], sum = 0.0f;
            for (unsigned j = 1; j < out; ++j) {
                top = y[j] > top ? y[j] : top;
            }
            for (unsigned j = 0; j < out; ++j) {
                y[j] = expf(y[j] - top);
                sum += y[j];
            }
            for (unsigned j = 0; j < out; ++j) {
                y[j] /= sum;
            }
        } else {
            for (unsigned j = 0; j < out; ++j) {
                y[j] = activate_one(m->acts[l], y[j]);
            }
        }
    }
}

/* Output delta of sample s into d: y - t for sigmoid+BCE and softmax+CE, (y - t) f'(y) for
 * MSE. The target t is the one-hot of a class label, or a row of float32 regression targets
 * (MSE; with a linear output the delta is y - t, the gradient of (y - t)^2 / 2). */
static void output_delta(uint16_t s, float *d)
{
    model_t *m = &g_model;
    const unsigned L = m->nlayers, C = m->dims[L];
    const float *y = (const float *)m->act[L - 1u];
    const int regression = (m->format & FORMAT_FLOAT_TARGETS) != 0;
    const uint8_t label = regression ? 0u : m->Y[s];
    for (unsigned k = 0; k < C; ++k) {
        float t = k == label ? 1.0f : 0.0f;
        if (regression) {
            memcpy(&t, m->Y + ((size_t)s * C + k) * sizeof(float), sizeof t);
        }
        const float e = y[k] - t;
        d[k] = m->loss == LOSS_MSE ? e * slope(m->acts[L - 1u], y[k]) : e;
    }
}

void lsgd_train(const train_args_t *a)
{
    model_t *m = &g_model;
    const float lr = a->lr;
    for (unsigned ep = 0; ep < a->epochs; ++ep) {
        for (uint16_t s = 0; s < a->n; ++s) {
            load_input(s);
            forward();
            float *d = (float *)m->delta[0];
            float *next = (float *)m->delta[1];
            output_delta(s, d);
            for (unsigned l = m->nlayers; l-- > 0u;) {
                const unsigned in = m->dims[l], out = m->dims[l + 1u];
                const float *x = l == 0u ? m->xin : (const float *)m->act[l - 1u];
                float *W = (float *)m->W[l];
                float *b = (float *)m->b[l];
                for (unsigned i = 0; i < in; ++i) {
                    float *row = W + (size_t)i * out;
                    const float step = lr * x[i];
                    if (l == 0u) { /* the input layer propagates no delta */
                        for (unsigned j = 0; j < out; ++j) {
                            row[j] -= step * d[j];
                        }
                        continue;
                    }
                    float back = 0.0f;
                    for (unsigned j = 0; j < out; ++j) {
                        back += row[j] * d[j]; /* the old weight, before its update */
                        row[j] -= step * d[j];
                    }
                    next[i] = back * slope(m->acts[l - 1u], x[i]);
                }
                for (unsigned j = 0; j < out; ++j) {
                    b[j] -= lr * d[j];
                }
                float *t = d;
                d = next;
                next = t;
            }
        }
    }
}

void sgd_train(const train_args_t *a)
{
    model_t *m = &g_model;
    const unsigned L = m->nlayers;
    for (unsigned ep = 0; ep < a->epochs; ++ep) {
        for (uint16_t first = 0; first < a->n; first = (uint16_t)(first + a->batch)) {
            const uint16_t count =
                (uint16_t)((a->n - first) < a->batch ? (a->n - first) : a->batch);
            for (unsigned l = 0; l < L; ++l) {
                const size_t in = m->dims[l], out = m->dims[l + 1u];
                memset(m->gW[l], 0, in * out * sizeof(float));
                memset(m->gb[l], 0, out * sizeof(float));
            }
            for (uint16_t s = first; s < first + count; ++s) {
                load_input(s);
                forward();
                output_delta(s, (float *)m->delta[L - 1u]);
                for (unsigned l = L; l-- > 0u;) {
                    const unsigned in = m->dims[l], out = m->dims[l + 1u];
                    const float *x = l == 0u ? m->xin : (const float *)m->act[l - 1u];
                    const float *d = (const float *)m->delta[l];
                    const float *W = (const float *)m->W[l];
                    float *gW = (float *)m->gW[l];
                    float *gb = (float *)m->gb[l];
                    for (unsigned i = 0; i < in; ++i) {
                        float *grow = gW + (size_t)i * out;
                        const float xi = x[i];
                        for (unsigned j = 0; j < out; ++j) {
                            grow[j] += xi * d[j];
                        }
                    }
                    for (unsigned j = 0; j < out; ++j) {
                        gb[j] += d[j];
                    }
                    if (l > 0u) {
                        float *prev = (float *)m->delta[l - 1u];
                        for (unsigned i = 0; i < in; ++i) {
                            const float *row = W + (size_t)i * out;
                            float back = 0.0f;
                            for (unsigned j = 0; j < out; ++j) {
                                back += row[j] * d[j];
                            }
                            prev[i] = back * slope(m->acts[l - 1u], x[i]);
                        }
                    }
                }
            }
            const float step = a->lr / (float)count;
            for (unsigned l = 0; l < L; ++l) {
                const size_t in = m->dims[l], out = m->dims[l + 1u];
                float *W = (float *)m->W[l];
                float *b = (float *)m->b[l];
                const float *gW = (const float *)m->gW[l];
                const float *gb = (const float *)m->gb[l];
                for (size_t k = 0; k < in * out; ++k) {
                    W[k] -= step * gW[k];
                }
                for (size_t j = 0; j < out; ++j) {
                    b[j] -= step * gb[j];
                }
            }
        }
    }
}

void float_predict(uint16_t n, uint8_t *labels)
{
    model_t *m = &g_model;
    const unsigned L = m->nlayers, C = m->dims[L];
    for (uint16_t s = 0; s < n; ++s) {
        load_input(s);
        forward();
        const float *y = (const float *)m->act[L - 1u];
        unsigned best = 0;
        for (unsigned k = 1; k < C; ++k) {
            if (y[k] > y[best]) {
                best = k;
            }
        }
        labels[s] = (uint8_t)best;
    }
}

#endif
