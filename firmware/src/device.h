/* The protocol state machine: feed it link bytes, it answers with frames through the HAL. */
#ifndef EDDL_DEVICE_H
#define EDDL_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#ifndef FW_VERSION_MAJOR
#define FW_VERSION_MAJOR 0
#define FW_VERSION_MINOR 2
#define FW_VERSION_PATCH 0
#endif
#ifndef BOARD_NAME
#define BOARD_NAME "host"
#endif
#ifndef RAM_BYTES
#define RAM_BYTES 0u
#endif
#ifndef FLASH_BYTES
#define FLASH_BYTES 0u
#endif

void device_feed(uint8_t byte);
/* The same for the leading non-zero bytes of p[0..n): appends them to the frame being received
 * (memchr and memcpy instead of a call per byte) and returns how many it took; the caller feeds
 * the 0x00 that ends the run with device_feed, so a handler that reads on (LINKTEST) starts
 * right after it. */
size_t device_feed_run(const uint8_t *p, size_t n);
/* Forget a partial frame (the link dropped); model, weights and the reply cache survive. */
void device_link_reset(void);
/* Read bytes until the link closes. */
void device_run(void);

#endif
