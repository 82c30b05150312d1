"""Cross-compiling for Cortex-M and running the build in the emulator."""

import numpy as np
import pytest

from tailorml.deploy.int8.c import generate_c, generate_header
from tailorml.deploy.int8.quantize import quantize
from tailorml.deploy.target.mcu import (
    ALIASES,
    PROFILES,
    STACK_RESERVE,
    Emulator,
    build_firmware,
    profile,
)
from tailorml.errors import DeployError

# a stand-in "model": a known stack frame, a known constant table and known logits
KNOWN_HEADER = """#include <stdint.h>
#define TAILORML_CHANNELS 1
#define TAILORML_WINDOW 4
#define TAILORML_N_CLASSES 3
int32_t tailorml_predict(const int16_t readings[4], int16_t logits[3]);
"""
KNOWN_SOURCE = """#include "tailorml_model.h"
const int8_t table[3000] = {1};
__attribute__((noinline)) static int32_t touch(volatile uint8_t *buffer, int32_t n) {
    for (int32_t i = 0; i < n; i++) buffer[i] = (uint8_t)i;
    return buffer[n - 1];
}
int32_t tailorml_predict(const int16_t readings[4], int16_t logits[3]) {
    volatile uint8_t frame[1000];
    logits[0] = readings[0] + readings[1];
    logits[1] = readings[2] * readings[3];
    logits[2] = (int16_t)(touch(frame, 1000) + table[(uint16_t)readings[3] % 3000]);
    return 2;
}
"""


def test_profiles_by_name_or_core_and_a_clear_error_otherwise():
    assert profile("cortex-m4").name == "stm32f401"
    assert profile("STM32L151").cpu == "cortex-m3"
    with pytest.raises(DeployError, match="stm32f401, stm32l151"):
        profile("esp32")


def test_the_deploy_section_knows_every_profile_and_core_name():
    """`deploy.target` is checked when the config loads (a Literal: config.py imports no
    deploy module), so its names must be the profiles' and their cores'."""
    from typing import get_args

    from tailorml.config import DeployConfig

    names = get_args(DeployConfig.model_fields["target"].annotation)
    assert sorted(names) == sorted([*PROFILES, *ALIASES])


@pytest.mark.parametrize("target", ["stm32f401", "stm32l151"])
def test_emulated_call_returns_known_values_and_measures_stack_and_sizes(target, tmp_path):
    firmware = build_firmware(KNOWN_HEADER, KNOWN_SOURCE, profile(target), tmp_path)
    assert firmware.rodata >= 3000  # the const table lies in flash
    run = Emulator(firmware, 3).predict(np.array([100, 20, 7, 6], dtype=np.int16))
    assert run.logits.tolist() == [120, 42, 999 % 256 + 0]  # table[6] is 0
    assert run.decided == 2
    assert 1000 <= run.peak_stack < 1000 + 64  # the frame plus a few saved registers


def test_the_model_on_cortex_m4_and_m3_computes_the_references_logits(trained, tmp_path):
    quantized = quantize(trained.model, trained.train)
    header, source = generate_header(quantized), generate_c(quantized)
    windows = trained.test[:: max(1, len(trained.test) // 12)]
    expected = quantized.logits(windows)
    for name in ("stm32f401", "stm32l151"):
        firmware = build_firmware(header, source, profile(name), tmp_path / name)
        emulator = Emulator(firmware, 3)
        for index, readings in enumerate(quantized.readings(windows)):
            # counted after an uncounted run: cached translations must not skip the count
            run = emulator.predict(readings, count_instructions=index == 1)
            assert np.array_equal(run.logits, expected[index]), (name, index)
            assert run.decided == quantized.decide(expected[index : index + 1])[0]
            if index == 1:
                # at least one instruction per two MACs, even with dual-MAC SIMD
                assert run.instructions > quantized.n_macs() / 2
        assert 0 < run.peak_stack < STACK_RESERVE
        assert firmware.rodata >= quantized.n_weight_bytes()


@pytest.mark.parametrize("widths", [[16, 32, 32], [5, 9, 9]])
def test_random_models_of_odd_and_even_widths_run_bit_for_bit_on_cortex_m4(widths, tmp_path):
    """The SMLAD kernels with random weights, odd channel counts (a channel paired with
    itself) and depths that are not multiples of 4 (the kernels' tails). An inline-assembly
    operand sharing a register with another of the same value broke exactly these."""
    import torch

    from tailorml.models.cnn import CNNSpec, SmallCNN
    from tailorml.policy import AlertPolicy

    torch.manual_seed(0)
    spec = CNNSpec(1, 24, 3, conv_channels=widths, hidden=widths[-1])
    model = SmallCNN(spec, torch.tensor([150.0]), torch.tensor([50.0])).eval()
    model.policy = AlertPolicy(threshold=0.6)
    windows = np.random.default_rng(1).uniform(40, 400, (40, 1, 24)).astype(np.float32)
    quantized = quantize(model, windows)
    header, source = generate_header(quantized), generate_c(quantized)
    emulator = Emulator(build_firmware(header, source, profile("stm32f401"), tmp_path), 3)
    expected = quantized.logits(windows)
    for index, readings in enumerate(quantized.readings(windows)):
        assert np.array_equal(emulator.predict(readings).logits, expected[index]), index
