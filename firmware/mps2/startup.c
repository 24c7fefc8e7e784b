/* Reset and vector table for the Arm MPS2 memory map (AN385 Cortex-M3, AN386 Cortex-M4F, AN500
 * Cortex-M7): turn on the FPU where the image uses one, copy .data, clear .bss, start the
 * peripherals, run the protocol loop. */
#include <stdint.h>

#include "device.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
void hal_init(void);
void Reset_Handler(void);
void Fault_Handler(void);

typedef struct {
    uint32_t *initial_sp;
    void (*handlers[15])(void);
} vectors_t;

__attribute__((section(".vectors"), used)) static const vectors_t s_vectors = {
    &_estack,
    {Reset_Handler,
    Fault_Handler, /* NMI */
    Fault_Handler, /* HardFault */
    Fault_Handler, /* MemManage */
    Fault_Handler, /* BusFault */
    Fault_Handler, /* UsageFault */
    0, 0, 0, 0,
    Fault_Handler, /* SVCall */
    Fault_Handler, /* DebugMon */
    0,
    Fault_Handler, /* PendSV */
    Fault_Handler}, /* SysTick */
};

void Fault_Handler(void)
{
    for (;;) {
    }
}

/* A hard-float image faults (UsageFault, NOCP) on its first float instruction unless CP10 and
 * CP11 are granted full access; nothing before this point may touch a float register. */
static void fpu_enable(void)
{
#if defined(__ARM_FP)
    volatile uint32_t *const cpacr = (volatile uint32_t *)0xE000ED88u;
    *cpacr |= 0xFu << 20;
    __asm volatile("dsb\n\tisb" ::: "memory");
#endif
}

void Reset_Handler(void)
{
    fpu_enable();
    uint32_t *src = &_sidata;
    for (uint32_t *dst = &_sdata; dst < &_edata;) {
        *dst++ = *src++;
    }
    for (uint32_t *dst = &_sbss; dst < &_ebss;) {
        *dst++ = 0u;
    }
    hal_init();
    for (;;) {
        device_run();
    }
}
