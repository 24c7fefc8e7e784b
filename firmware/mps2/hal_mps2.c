/* HAL for the MPS2 AN385 peripherals QEMU emulates: CMSDK UART0 (polled) and CMSDK TIMER0 as
 * a free-running 32-bit down-counter at the 25 MHz peripheral clock. Under `-icount shift=0`
 * one tick is 40 guest instructions, deterministic from run to run. */
#include <stdint.h>

#include "hal.h"

#define REG(addr) (*(volatile uint32_t *)(addr))
#define UART0 0x40004000u
#define UART_DATA REG(UART0 + 0x00u)
#define UART_STATE REG(UART0 + 0x04u)
#define UART_CTRL REG(UART0 + 0x08u)
#define UART_BAUDDIV REG(UART0 + 0x10u)
#define TIMER0 0x40000000u
#define TIMER_CTRL REG(TIMER0 + 0x00u)
#define TIMER_VALUE REG(TIMER0 + 0x04u)
#define TIMER_RELOAD REG(TIMER0 + 0x08u)

#define PCLK_HZ 25000000u

void hal_init(void)
{
    UART_BAUDDIV = 16u; /* the smallest divider; QEMU does not pace the line anyway */
    UART_CTRL = 0x3u;   /* TX and RX enabled, no interrupts */
    TIMER_CTRL = 0u;
    TIMER_RELOAD = 0xFFFFFFFFu;
    TIMER_VALUE = 0xFFFFFFFFu;
    TIMER_CTRL = 0x1u;
}

int hal_getc(void)
{
    while ((UART_STATE & 0x2u) == 0u) {
    }
    return (int)(UART_DATA & 0xFFu);
}

size_t hal_skip(size_t n)
{
    (void)n;
    return hal_getc() < 0 ? 0u : 1u; /* one polled byte at a time */
}

void hal_write(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; ++i) {
        while (UART_STATE & 0x1u) {
        }
        UART_DATA = p[i];
    }
}

uint32_t hal_ticks(void) { return 0xFFFFFFFFu - TIMER_VALUE; }

uint32_t hal_tick_hz(void) { return PCLK_HZ; }

uint32_t hal_irq_mask(void)
{
    uint32_t primask;
    __asm volatile("mrs %0, primask\n\tcpsid i" : "=r"(primask)::"memory");
    return primask;
}

void hal_irq_restore(uint32_t saved) { __asm volatile("msr primask, %0" ::"r"(saved) : "memory"); }
