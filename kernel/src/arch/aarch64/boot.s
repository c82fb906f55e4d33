// aarch64 boot stub: runs with the MMU off at the physical load address, so every address it
// uses is PC-relative (adr/adrp) until it has jumped to the upper half.
//
// 1. A Linux arm64 Image header, so a raw Image boots too (firmware then passes the device
//    tree's address in x0; an ELF boot passes 0 and the kernel looks at the start of RAM).
// 2. Secondary CPUs park; EL2 drops to EL1.
// 3. Boot page tables: one level-1 table of 1 GiB blocks (the first GiB as device memory, the
//    next three as normal memory) used by TTBR0 as an identity map, needed while the MMU turns
//    on, and by TTBR1 as the linear map at PHYS_OFFSET where the kernel runs.
// 4. MMU on, jump to the upper half, stack, clear .bss, call `aarch64_entry(dtb)`.

.equ MAIR_VALUE, 0x0444ff00          // attr0 Device-nGnRnE, attr1 Normal write-back,
                                    // attr2 Normal non-cacheable, attr3 Device-nGnRE
.equ TCR_VALUE, 0xb5103510           // 48-bit VAs in both halves, 4 KiB granules, WB, inner shareable
.equ SCTLR_RES1, 0x30d00800
.equ SCTLR_MMU_ON, 0x30d01805        // RES1 | M | C | I
.equ BLOCK_DEVICE, 0x0060000000000401  // UXN | PXN | AF | attr0 | block
.equ BLOCK_NORMAL, 0x0000000000000705  // AF | inner shareable | attr1 | block

.section .text.boot, "ax"
.global _start
_start:
    b       primary                 // code0
    .long   0                       // code1
    .quad   0x80000                 // text_offset
    .quad   __kernel_size           // image_size
    .quad   0xa                     // flags: little-endian, 4 KiB pages, anywhere in RAM
    .quad   0, 0, 0                 // reserved
    .ascii  "ARM\x64"               // magic
    .long   0                       // no PE header

primary:
    mov     x19, x0                 // device tree, if the firmware passed one
    mrs     x1, mpidr_el1
    and     x1, x1, #0xff
    cbnz    x1, park

    mrs     x1, CurrentEL
    lsr     x1, x1, #2
    cmp     x1, #2
    b.ne    at_el1
    mov     x1, #(1 << 31)          // HCR_EL2.RW: EL1 runs AArch64
    msr     hcr_el2, x1
    mov     x1, #3                  // CNTHCTL_EL2: EL1 may use the physical counter and timer
    msr     cnthctl_el2, x1
    msr     cntvoff_el2, xzr
    mrs     x1, id_aa64pfr0_el1     // a GICv3 system-register interface?
    ubfx    x1, x1, #24, #4
    cbz     x1, 3f
    mov     x1, #0x9                // ICC_SRE_EL2: SRE | Enable: EL1 may use ICC_SRE_EL1
    msr     icc_sre_el2, x1
    isb
3:
    mov     x1, #0x3c5              // SPSR_EL2: EL1h with D, A, I, F masked
    msr     spsr_el2, x1
    adr     x1, at_el1
    msr     elr_el2, x1
    eret

at_el1:
    // Clear .bss first: the boot page tables live there.
    adrp    x1, __bss_start
    adrp    x2, __bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:
    adrp    x1, boot_l0
    adrp    x2, boot_l1
    orr     x3, x2, #3              // table descriptor
    str     x3, [x1]
    ldr     x3, =BLOCK_DEVICE       // L1[0]: 0-1 GiB, MMIO
    str     x3, [x2]
    ldr     x3, =BLOCK_NORMAL
    mov     x4, #(1 << 30)
    orr     x5, x3, x4              // L1[1]: 1-2 GiB, RAM
    str     x5, [x2, #8]
    add     x5, x5, x4              // L1[2]: 2-3 GiB
    str     x5, [x2, #16]
    add     x5, x5, x4              // L1[3]: 3-4 GiB
    str     x5, [x2, #24]

    ldr     x3, =MAIR_VALUE
    msr     mair_el1, x3
    mrs     x3, id_aa64mmfr0_el1    // physical address size, for TCR_EL1.IPS
    and     x3, x3, #7
    ldr     x4, =TCR_VALUE
    orr     x4, x4, x3, lsl #32
    msr     tcr_el1, x4
    msr     ttbr0_el1, x1
    msr     ttbr1_el1, x1
    dsb     ish
    isb
    tlbi    vmalle1
    dsb     ish
    isb
    ldr     x3, =SCTLR_MMU_ON
    msr     sctlr_el1, x3
    isb

    ldr     x1, =upper_half         // link-time (upper-half) address
    br      x1

upper_half:
    ldr     x1, =__stack_top
    mov     sp, x1
    mov     x0, x19
    bl      aarch64_entry
park:
    wfe
    b       park

.section .bss
.balign 4096
.global boot_l0
boot_l0:
    .space 4096
.global boot_l1
boot_l1:
    .space 4096
