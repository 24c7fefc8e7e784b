/* Serial protocol constants shared by every build (mirrored in eddl/mcu/protocol.py).
 *
 * A frame is header {version u8, type u8, seq u16 LE, length u16 LE}, `length` payload bytes
 * and a CRC-32 (IEEE, LE) over header+payload, COBS-encoded and terminated by one 0x00 byte.
 */
#ifndef EDDL_PROTO_H
#define EDDL_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_VERSION 1u
#define HEADER_BYTES 6u
#define CRC_BYTES 4u
#ifndef MAX_PAYLOAD
#define MAX_PAYLOAD 1024u
#endif
#define MAX_RAW_FRAME (HEADER_BYTES + MAX_PAYLOAD + CRC_BYTES)
/* COBS adds one byte per 254 plus one; the delimiter is not stored. */
#define MAX_ENCODED_FRAME (MAX_RAW_FRAME + MAX_RAW_FRAME / 254u + 2u)

/* Request types; a reply carries type | REPLY_BIT, a failure carries MSG_ERROR. */
enum {
    MSG_HELLO = 0x01,
    MSG_SETUP = 0x02,
    MSG_LOAD = 0x03,
    MSG_TRAIN = 0x04,
    MSG_READ = 0x05,
    MSG_STATS = 0x06,
    MSG_PREDICT = 0x07,
    MSG_LINKTEST = 0x08,
    MSG_TOPP = 0x09, /* top-P of phi - theta over the shared layers (topp.h) */
    MSG_ERROR = 0x7F,
    REPLY_BIT = 0x80
};

/* Error codes. Codes below ERR_FIRST_APP are link errors: the request never reached the state
 * machine (no state changed, nothing cached), so the host simply retransmits. */
enum {
    ERR_BAD_CRC = 1,
    ERR_BAD_FRAME = 2,
    ERR_OVERSIZED = 3,
    ERR_BAD_VERSION = 4,
    ERR_FIRST_APP = 5,
    ERR_UNKNOWN_TYPE = 5,
    ERR_BAD_ARG = 6,
    ERR_NO_MEMORY = 7,
    ERR_NOT_READY = 8,
    ERR_UNSUPPORTED = 9,
    ERR_NOT_FINITE = 10,
    ERR_SEQ_REUSED = 11, /* a remembered sequence number came with a different command */
    ERR_STALE_SEQ = 12   /* a sequence number older than the replay window: not applied */
};

/* Replay window: the device remembers the last SEQ_WINDOW sequence numbers (a power of two, so
 * that seq % SEQ_WINDOW gives each number of the window its own slot across the u16 wrap). */
#ifndef SEQ_WINDOW
#define SEQ_WINDOW 16u
#endif
/* Replies kept per remembered request: every state-changing reply fits (SETUP 8, LOAD 4,
 * TRAIN 8, ERROR 4); longer ones (READ, PREDICT, STATS) come from read-only requests. */
#define KEPT_REPLY_BYTES 8u

/* Algorithms (SETUP) and the HELLO kernel bitmask (bit = 1 << algo). */
enum { ALGO_TIFED = 1, ALGO_LSGD = 2, ALGO_SGD = 3, ALGO_LSGD_Q8 = 4 };

/* Float activations and losses (SETUP, float algorithms only). */
enum { ACT_LINEAR = 0, ACT_TANH = 1, ACT_SIGMOID = 2, ACT_RELU = 3, ACT_SOFTMAX = 4 };
enum { LOSS_BCE = 0, LOSS_CE = 1, LOSS_MSE = 2 };

/* Sample format (SETUP's optional last byte; absent = 0: uint8 pixels and u8 class labels).
 * Float inputs are float32 features read as they are (not pixels / 255); float targets are
 * float32 regression targets, one per output (MSE). Float algorithms only. */
enum { FORMAT_FLOAT_INPUTS = 1, FORMAT_FLOAT_TARGETS = 2, FORMAT_ALL = 3 };

/* HELLO's flags byte (its last byte): bit 0, a sequence number has been executed (the newest
 * one is in the reply); bit 1, SETUP takes float32 samples (the sample format above: firmware
 * 0.2.0 and later with the float kernels built). Firmware 0.1.x sets bit 0 alone. */
enum { HELLO_HAS_SEQ = 1, HELLO_FLOAT_SAMPLES = 2 };

/* Tensor ids for LOAD/READ: layer l has W = 4l, b = 4l+1, feedback B = 4l+2 (TIFeD hidden
 * layers), format = 4l+3 (lsgd-q8 {fw, fb} fractional bits); the sample buffer is X (uint8
 * pixels or float32 features), labels Y (u8 class labels or float32 targets). */
#define TENSOR_W(l) ((uint8_t)(4u * (l)))
#define TENSOR_X 0xF0u
#define TENSOR_Y 0xF1u
#define TENSOR_Q8STATE 0xF2u /* lsgd-q8 {u32 seed, u32 counter} */

#define MAX_LAYERS 4u
#define LAYER_ALL 0xFFu

#endif
