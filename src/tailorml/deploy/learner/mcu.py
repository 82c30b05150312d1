"""The model and its learner cross-compiled for a Cortex-M and run in the emulator: the proof
that the microcontroller computes what the host build computes (decisions and update
statuses, bit for bit), and what an update costs there — instructions counted, peak stack
painted, size of the linked image.

The Cortex-M4F runs the float head on its FPU; the Cortex-M3 has none, so the same C calls
compiler-rt's soft-float routines (linked from the bundled clang's runtime: the learner's
build, unlike the integer model's, needs it), which costs several times the instructions.
Instructions are counted per translated block entered (a block hook, the instruction
lengths of each block decoded once) rather than per instruction, at a fraction of the
emulation time. It counts a little more than unicorn's per-instruction hook (1.4 % on a
Cortex-M4 step: instructions of a block that a condition skips are counted), so take it,
like every latency here, as an estimate. The translation cache is flushed when a count
starts: unicorn runs code translated before a hook was added without calling the hook.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tailorml.deploy.int8.quantize import QuantizedModel
from tailorml.deploy.learner.host import learner_sources, status_type, to_status
from tailorml.deploy.learner.ondevice import LearnerSettings, UpdateStatus
from tailorml.deploy.learner.traces import DangerousTraces
from tailorml.deploy.target.mcu import (
    Emulator,
    Firmware,
    TargetProfile,
    compile_flags,
    linker_script,
    read_firmware,
    run_compiler,
    zig_command,
)
from tailorml.errors import DeployError

IO_STEPS = 288  # readings the harness takes per call (a day of 5-minute readings)
CALL_TIMEOUT_US = 300_000_000

_HARNESS = f"""#include "tailorml_learner.h"
/* The emulator writes tm_io_readings and tm_io_count, calls a tm_emu_ function, reads back. */
int16_t tm_io_readings[{IO_STEPS}];
int8_t tm_io_classes[{IO_STEPS}];
volatile int32_t tm_io_count;
tailorml_update_status tm_io_status;
__attribute__((noinline)) void tm_emu_init(void) {{ tailorml_learner_init(); }}
__attribute__((noinline)) void tm_emu_steps(void) {{
    for (int32_t i = 0; i < tm_io_count; i++) {{
        tm_io_classes[i] = (int8_t)tailorml_learner_step(tm_io_readings[i], 0);
    }}
}}
__attribute__((noinline)) void tm_emu_update(void) {{ tailorml_learner_update(&tm_io_status); }}
void _start(void) {{
    for (;;) {{
        tm_emu_init();
        tm_emu_steps();
        tm_emu_update();
    }}
}}
"""
ENTRY_POINTS = ("tm_emu_init", "tm_emu_steps", "tm_emu_update")


def build_learner_firmware(
    quantized: QuantizedModel,
    settings: LearnerSettings,
    traces: DangerousTraces | None,
    target: TargetProfile,
    directory: Path,
) -> Firmware:
    """Cross-compile model, learner and harness for `target` into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sources = learner_sources(quantized, settings, traces)
    for name, text in sources.items():
        (directory / name).write_text(text)
    (directory / "harness.c").write_text(_HARNESS)
    (directory / "link.ld").write_text(linker_script(target))
    elf = directory / "learner.elf"
    flags = [flag for flag in compile_flags(target) if flag != "-nostdlib"]  # compiler-rt
    run_compiler(
        [
            *zig_command(),
            *flags,
            f"-Wl,-T,{directory / 'link.ld'}",
            "-Wl,--gc-sections",
            *(f"-Wl,-u,{entry}" for entry in ENTRY_POINTS),
            "-o",
            str(elf),
            *(str(directory / name) for name in sources if name.endswith(".c")),
            str(directory / "harness.c"),
        ],
        f"the {target.cpu} build of the learner",
    )
    return read_firmware(elf, target)


@dataclass
class Call:
    """One emulated call: instructions executed (None if not counted), peak stack bytes."""

    instructions: int | None
    peak_stack: int


class LearnerEmulator(Emulator):
    """The learner firmware in unicorn; `steps` and `update` drive it like the host build."""

    def __init__(self, firmware: Firmware) -> None:
        super().__init__(firmware, n_classes=0)
        missing = [name for name in ENTRY_POINTS if name not in firmware.symbols]
        if missing:
            raise DeployError(f"{firmware.elf} is no learner build (missing {missing})")
        self._lengths: dict[tuple[int, int], int] = {}
        self.status_type = status_type()

    def call(self, symbol: str, count: bool = False) -> Call:
        """Run the harness function `symbol` to its return."""
        from unicorn import UC_HOOK_BLOCK

        count_blocks = self._count_block if count else None
        instructions, peak_stack = self.run_to_return(
            self.firmware.symbols[symbol], symbol, UC_HOOK_BLOCK, count_blocks, CALL_TIMEOUT_US
        )
        return Call(instructions, peak_stack)

    def _count_block(self, uc, address: int, size: int, counter: list[int]) -> None:
        key = (address, size)
        if key not in self._lengths:
            halfwords = np.frombuffer(bytes(uc.mem_read(address, size)), "<u2")
            count, i = 0, 0
            while i < len(halfwords):  # a Thumb-2 32-bit instruction starts 0b11101/11110/11111
                i += 2 if halfwords[i] >> 11 in (0b11101, 0b11110, 0b11111) else 1
                count += 1
            self._lengths[key] = count
        counter[0] += self._lengths[key]

    def init(self) -> None:
        self.call("tm_emu_init")

    def steps(self, readings: np.ndarray, count: bool = False) -> tuple[np.ndarray, Call]:
        """Feed up to IO_STEPS readings; the decided classes (-1: no full window)."""
        readings = np.ascontiguousarray(readings, dtype="<i2")
        if len(readings) > IO_STEPS:
            raise ValueError(f"at most {IO_STEPS} readings per call")
        symbols = self.firmware.symbols
        self.uc.mem_write(symbols["tm_io_readings"], readings.tobytes())
        self.uc.mem_write(symbols["tm_io_count"], len(readings).to_bytes(4, "little"))
        call = self.call("tm_emu_steps", count)
        classes = np.frombuffer(self.uc.mem_read(symbols["tm_io_classes"], len(readings)), "i1")
        return classes.astype(np.int32), call

    def update(self, count: bool = True) -> tuple[UpdateStatus, Call]:
        call = self.call("tm_emu_update", count)
        size = len(bytes(self.status_type()))
        raw = self.uc.mem_read(self.firmware.symbols["tm_io_status"], size)
        return to_status(self.status_type.from_buffer_copy(bytes(raw))), call
