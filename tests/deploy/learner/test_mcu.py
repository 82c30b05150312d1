"""The learner cross-compiled for Cortex-M: the emulated Cortex-M4F lives through the same
days as the host build, decision for decision and update for update; the M3 build links
compiler-rt's soft-float."""

import numpy as np
import pytest

from tailorml.deploy.int8.quantize import quantize
from tailorml.deploy.learner.host import HostLearner
from tailorml.deploy.learner.mcu import LearnerEmulator, build_learner_firmware
from tailorml.deploy.learner.ondevice import MISSING, LearnerSettings, memory_layout
from tailorml.deploy.learner.traces import dangerous_traces
from tailorml.deploy.target.mcu import FLASH_BASE, profile

SETTINGS = LearnerSettings(
    min_days=0, min_hypo_train=8, min_held=4, held_out_block=1, near_low_mgdl=100
)


@pytest.fixture(scope="module")
def built(trained, tmp_path_factory):
    quantized = quantize(trained.model, trained.train)
    traces = dangerous_traces(quantized)
    firmware = build_learner_firmware(
        quantized, SETTINGS, traces, profile("cortex-m4"), tmp_path_factory.mktemp("m4")
    )
    cgm = trained.prepared.cohort.of("adolescent-003")["cgm"].to_numpy()[:864]
    readings = np.where(np.isnan(cgm), MISSING, np.rint(np.nan_to_num(cgm))).astype(np.int16)
    return quantized, traces, firmware, readings


def test_the_emulated_cortex_m4_lives_three_days_exactly_as_the_host_build(built, tmp_path):
    quantized, traces, firmware, readings = built
    host = HostLearner(quantized, SETTINGS, tmp_path, traces)
    classes, _, _, statuses = host.live(readings, 288)
    emulator = LearnerEmulator(firmware)
    emulator.init()
    for day in range(3):
        decided, _ = emulator.steps(readings[day * 288 : (day + 1) * 288])
        assert np.array_equal(decided, classes[day * 288 : (day + 1) * 288]), day
        status, call = emulator.update()
        assert status == statuses[day]
        if status.trained:  # a trained update costs far more than its bookkeeping
            assert call.instructions > 100_000
    assert statuses[-1].trained and statuses[-1].accepted  # the third night: a new head
    assert 0 < call.peak_stack < 4096
    layout = memory_layout(SETTINGS, 32, 3, 24, 6, len(traces))
    assert firmware.symbols and firmware.static_ram >= layout.ram  # the state is static RAM


def test_block_counting_is_stable_and_close_to_a_per_instruction_hook(built):
    # the hook is added to code the emulator has already translated: the count must not
    # depend on that (unicorn runs blocks translated before a hook without calling it)
    from unicorn import UC_HOOK_CODE

    _, _, firmware, readings = built
    emulator = LearnerEmulator(firmware)
    emulator.init()
    emulator.steps(readings[:30])
    _, first = emulator.steps(readings[30:33], count=True)  # predictions and a label
    emulator.init()
    emulator.steps(readings[:30])
    executed = [0]

    def count(*_):
        executed[0] += 1

    hook = emulator.uc.hook_add(UC_HOOK_CODE, count)
    _, call = emulator.steps(readings[30:33], count=True)
    emulator.uc.hook_del(hook)
    assert call.instructions == first.instructions > 100_000  # whatever was translated before
    # every instruction of the blocks entered: a little above unicorn's per-instruction hook
    assert executed[0] <= call.instructions <= 1.03 * executed[0]


def test_the_cortex_m3_build_uses_soft_float(built, tmp_path):
    quantized, traces, m4, _ = built
    m3 = build_learner_firmware(quantized, SETTINGS, traces, profile("cortex-m3"), tmp_path)
    assert "__aeabi_fmul" in m3.symbols and "__aeabi_fmul" not in m4.symbols
    # the float routines live in its flash (the sizes no longer tell: the M4's model code is
    # the larger, its SIMD kernels unrolled in every layer)
    assert FLASH_BASE <= m3.symbols["__aeabi_fmul"] < FLASH_BASE + m3.flash
