"""The conservative cycle model on a loop whose cost is known by hand, and the budget judged
by it."""

from __future__ import annotations

import numpy as np
import pytest

from tailorml.deploy.target.cycles import CycleCounter, base_mnemonic, instruction_cycles
from tailorml.deploy.target.mcu import Emulator, build_firmware, profile

LOOP_HEADER = """#include <stdint.h>
#define TAILORML_CHANNELS 1
#define TAILORML_WINDOW 4
#define TAILORML_N_CLASSES 3
int32_t tailorml_predict(const int16_t readings[4], int16_t logits[3]);
"""
# readings[0] iterations of: a load from flash, an add, a subtract, a branch back
LOOP_SOURCE = """#include "tailorml_model.h"
const int32_t table[4] = {7, 0, 0, 0};
int32_t tailorml_predict(const int16_t readings[4], int16_t logits[3]) {
    int32_t n = readings[0], acc = 0;
    const int32_t *p = table;
    __asm__ volatile(
        "1:\\n"
        "ldr r3, [%[p]]\\n"
        "add %[acc], %[acc], r3\\n"
        "subs %[n], %[n], #1\\n"
        "bne 1b\\n"
        : [acc] "+r"(acc), [n] "+r"(n)
        : [p] "r"(p)
        : "r3", "cc", "memory");
    logits[0] = (int16_t)acc;
    logits[1] = 0;
    logits[2] = 0;
    return 0;
}
"""


@pytest.mark.parametrize(
    ("mnemonic", "registers", "cycles"),
    [
        ("ldr.w", 1, 2),
        ("strh", 1, 2),
        ("smlad", 4, 1),
        ("push", 5, 6),
        ("ldm", 3, 4),
        ("udiv", 3, 12),
        ("bne", 1, 1),  # a branch's refill is added only when it is taken
        ("adds", 3, 1),
    ],
)
def test_instruction_costs_from_the_trm_table(mnemonic, registers, cycles):
    assert instruction_cycles(mnemonic, registers) == cycles


def test_only_branches_lose_their_condition():
    assert base_mnemonic("bne") == base_mnemonic("b.w") == "b"
    assert base_mnemonic("bls") == "b" and base_mnemonic("bic") == "bic"


def test_ten_more_iterations_of_a_known_loop_cost_what_the_table_says(tmp_path):
    target = profile("cortex-m4")  # 2 flash wait states at 84 MHz
    firmware = build_firmware(LOOP_HEADER, LOOP_SOURCE, target, tmp_path)
    counter = CycleCounter(Emulator(firmware, 3))
    short, long = (counter.count(np.array([n, 0, 0, 0], np.int16)) for n in (10, 20))
    # per iteration: ldr 2 + add 1 + subs 1 + bne 1 = 5 core cycles; the bne is taken
    # (refill 3 + 2 wait states) and the ldr reads flash (2 wait states): 12 in all
    assert long.instructions - short.instructions == 40
    assert long.core_cycles - short.core_cycles == 50
    assert long.taken_branches - short.taken_branches == 10
    assert long.flash_reads - short.flash_reads == 10
    assert long.cycles - short.cycles == 120
    assert long.latency_ms(84_000_000) > short.latency_ms(84_000_000)
