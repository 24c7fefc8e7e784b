/* What a board (or the host simulator) provides to the protocol core. */
#ifndef EDDL_HAL_H
#define EDDL_HAL_H

#include <stddef.h>
#include <stdint.h>

/* Next byte from the link, blocking; -1 when the link closed (host: peer hung up). */
int hal_getc(void);
/* Discard up to n received bytes, at least one (blocking); returns how many, 0 when the link
 * closed. Lets LINKTEST swallow a raw burst as fast as the link takes it in. */
size_t hal_skip(size_t n);
void hal_write(const uint8_t *p, size_t n);
/* Free-running tick counter (wraps at 2^32) and its rate. */
uint32_t hal_ticks(void);
uint32_t hal_tick_hz(void);
/* Mask interrupts around a timed kernel; returns the previous mask for hal_irq_restore. */
uint32_t hal_irq_mask(void);
void hal_irq_restore(uint32_t saved);

#endif
