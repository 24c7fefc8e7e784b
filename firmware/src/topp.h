/* Top-P selection of the update phi - theta over the shared layers (TinyMetaFed uploads).
 *
 * MSG_TOPP carries a sub-command: snapshot theta, select the k largest |phi - theta|, or read
 * the kept entries of one tensor as (index, value) records. See topp.c.
 */
#ifndef EDDL_TOPP_H
#define EDDL_TOPP_H

#include <stddef.h>
#include <stdint.h>

enum { TOPP_SNAPSHOT = 0, TOPP_SELECT = 1, TOPP_READ = 2, TOPP_READ_INT8 = 3 };

/* Bytes of one record in a TOPP_READ reply: flat index u32, value (f32, or i32 for lsgd-q8). */
#define TOPP_RECORD_BYTES 8u
/* A TOPP_READ_INT8 reply: the tensor's scale f32, then records of index u32 and value i8. */
#define TOPP_INT8_HEAD_BYTES 4u
#define TOPP_INT8_RECORD_BYTES 5u

/* Handle a MSG_TOPP request: reply length, or -ERR_* with nothing changed. */
long topp_request(const uint8_t *p, size_t n, uint8_t *out);
/* The weights changed (LOAD, TRAIN): a selection no longer describes them. */
void topp_invalidate(void);
/* A new model (SETUP): forget the snapshot and the selection. */
void topp_reset(void);

#endif
