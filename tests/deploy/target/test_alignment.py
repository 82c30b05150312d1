"""Word alignment: the emulator traps unaligned access as a Cortex-M with CCR.UNALIGN_TRP
does, and the generated model, built as firmware for such a core is built
(-mno-unaligned-access), runs under it bit for bit."""

import numpy as np
import pytest

from tailorml.deploy.int8.c import generate_c, generate_header
from tailorml.deploy.int8.quantize import quantize
from tailorml.deploy.target.mcu import Emulator, UnalignedAccess, build_firmware, profile

# a stand-in "model" whose logits[0] is a word read at byte `readings[0]` of a known table
WORD_HEADER = """#include <stdint.h>
#define TAILORML_CHANNELS 1
#define TAILORML_WINDOW 4
#define TAILORML_N_CLASSES 3
int32_t tailorml_predict(const int16_t readings[4], int16_t logits[3]);
"""
WORD_SOURCE = """#include "tailorml_model.h"
static volatile uint8_t bytes[8] __attribute__((aligned(4))) = {1, 2, 3, 4, 5, 6, 7, 8};
int32_t tailorml_predict(const int16_t readings[4], int16_t logits[3]) {
    /* a word read where the caller says: what a pointer cast to uint32_t * compiles to */
    const uint32_t word = *(volatile const uint32_t *)(volatile const void *)(bytes + readings[0]);
    logits[0] = (int16_t)(word & 0xFFFF);
    logits[1] = (int16_t)(word >> 16);
    logits[2] = 0;
    return 0;
}
"""

# tailorml_head on features copied to an aligned buffer, or one int16 further on
HEAD_HARNESS = """#include "tailorml_model.h"
int16_t tm_input[TAILORML_CHANNELS * TAILORML_WINDOW];
int16_t tm_logits[TAILORML_N_CLASSES];
volatile int32_t tm_class;
volatile int32_t tm_offset; /* 0: the features word-aligned; 1: one int16 off */
__attribute__((noinline)) void tm_run(void) {
    TAILORML_ALIGN int16_t buffer[TAILORML_FEATURES + 1];
    int16_t *features = buffer + tm_offset;
    tailorml_features(tm_input, features);
    tm_class = tailorml_head(features, tm_logits);
}
void _start(void) { for (;;) tm_run(); }
"""


def test_the_trap_mode_stops_an_unaligned_word_read_the_core_would_otherwise_do(tmp_path):
    # unicorn alone does not trap (writing CCR.UNALIGN_TRP changes nothing there): the
    # unaligned read returns bytes 2..5 little-endian; the trap mode stops it instead
    firmware = build_firmware(WORD_HEADER, WORD_SOURCE, profile("cortex-m4"), tmp_path)
    readings = np.array([1, 0, 0, 0], dtype=np.int16)
    assert Emulator(firmware, 3).predict(readings).logits.tolist()[:2] == [0x0302, 0x0504]
    trapping = Emulator(firmware, 3, trap_unaligned=True)
    with pytest.raises(UnalignedAccess, match=r"unaligned 4-byte read at 0x2\w+1 .*tailorml_pred"):
        trapping.predict(readings)
    aligned = np.array([4, 0, 0, 0], dtype=np.int16)  # bytes 5..8: aligned, no trap
    assert trapping.predict(aligned).logits.tolist()[:2] == [0x0605, 0x0807]


@pytest.fixture(scope="module")
def quantized(trained):
    return quantize(trained.model, trained.train)


def test_the_model_runs_under_trapping_bit_for_bit_and_a_misaligned_array_traps(
    quantized, trained, tmp_path
):
    header, source = generate_header(quantized), generate_c(quantized)
    windows = trained.test[:: max(1, len(trained.test) // 6)]
    expected = quantized.logits(windows)
    readings = quantized.readings(windows)
    for name in ("cortex-m4", "cortex-m3"):
        firmware = build_firmware(
            header, source, profile(name), tmp_path / name, strict_alignment=True
        )
        emulator = Emulator(firmware, 3, trap_unaligned=True)
        for index, window in enumerate(readings):
            run = emulator.predict(window)
            assert np.array_equal(run.logits, expected[index]), (name, index)
    # features one int16 off a word: the SIMD kernel's word reads of them are unaligned
    firmware = build_firmware(
        header, source, profile("cortex-m4"), tmp_path / "head", HEAD_HARNESS, True
    )
    emulator = Emulator(firmware, 3, trap_unaligned=True)
    offset = firmware.symbols["tm_offset"]
    assert np.array_equal(emulator.predict(readings[0]).logits, expected[0])
    emulator.uc.mem_write(offset, (1).to_bytes(4, "little"))
    with pytest.raises(UnalignedAccess, match="tm_layer"):  # its kernel inlined
        emulator.predict(readings[0])
    # a core that does not trap computes the same logits from them
    emulator.trap_unaligned = False
    assert np.array_equal(emulator.predict(readings[0]).logits, expected[0])


@pytest.mark.parametrize("widths", [[16, 32, 32], [5, 9, 9]])
def test_random_models_of_odd_and_even_widths_run_under_trapping(widths, tmp_path):
    """Odd channel counts: input rows that do not start on a word take the plain path, an
    odd last output row is paired with itself, pairs of weight rows end on a word."""
    import torch

    from tailorml.models.cnn import CNNSpec, SmallCNN
    from tailorml.policy import AlertPolicy

    torch.manual_seed(0)
    spec = CNNSpec(1, 24, 3, conv_channels=widths, hidden=widths[-1])
    model = SmallCNN(spec, torch.tensor([150.0]), torch.tensor([50.0])).eval()
    model.policy = AlertPolicy(threshold=0.6)
    windows = np.random.default_rng(1).uniform(40, 400, (12, 1, 24)).astype(np.float32)
    quantized = quantize(model, windows)
    header, source = generate_header(quantized), generate_c(quantized)
    firmware = build_firmware(header, source, profile("stm32f401"), tmp_path, strict_alignment=True)
    emulator = Emulator(firmware, 3, trap_unaligned=True)
    expected = quantized.logits(windows)
    for index, readings in enumerate(quantized.readings(windows)):
        assert np.array_equal(emulator.predict(readings).logits, expected[index]), index
