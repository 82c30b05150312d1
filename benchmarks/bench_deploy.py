"""Cost of the microcontroller path: quantizing, the integer reference, the host build, the
emulator, and where the target's instructions go (per function of the firmware).

    .venv/bin/python benchmarks/bench_deploy.py --model runs/<run>/model.pt

Figures go in BENCHMARKS.md (section "On the wearable"). Synthetic cohort: the windows are
simulated; the instruction counts do not depend on the data beyond a few clamps.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

import numpy as np

from tailorml.config import Config
from tailorml.data.prepared import prepare
from tailorml.deploy.int8.c import generate_c, generate_header
from tailorml.deploy.int8.quantize import quantize
from tailorml.deploy.target.host import HostModel
from tailorml.deploy.target.mcu import PROFILES, Emulator, build_firmware
from tailorml.models.cnn import load_model
from tailorml.robust.evaluate import evenly_spaced


def instructions_per_function(emulator: Emulator, readings: np.ndarray) -> dict[str, int]:
    """Instructions executed per firmware function for one inference."""
    from elftools.elf.elffile import ELFFile

    with open(emulator.firmware.elf, "rb") as handle:
        functions = [
            (symbol["st_value"] & ~1, symbol["st_size"], symbol.name)
            for symbol in ELFFile(handle).get_section_by_name(".symtab").iter_symbols()
            if symbol["st_info"]["type"] == "STT_FUNC" and symbol["st_size"]
        ]
    counts: collections.Counter[str] = collections.Counter()

    def count(uc, address, size, data) -> None:
        for start, length, name in functions:
            if start <= address < start + length:
                counts[name] += 1
                return
        counts["(other)"] += 1

    hook = emulator.add_code_hook(count)
    try:
        emulator.predict(readings)
    finally:
        emulator.remove_code_hook(hook)
    return dict(counts.most_common())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--windows", type=int, default=2000, help="test windows to time")
    args = parser.parse_args()

    model = load_model(args.model)
    prepared = prepare(Config())
    calibration = prepared.windows.x[evenly_spaced(prepared.splits.pooled("train"), 4096)]
    test = prepared.windows.x[evenly_spaced(prepared.splits.pooled("test"), args.windows)]

    started = time.perf_counter()
    quantized = quantize(model, calibration)
    print(f"quantize (4096 calibration windows): {time.perf_counter() - started:.2f} s")
    started = time.perf_counter()
    expected = quantized.logits(test)
    elapsed = time.perf_counter() - started
    print(f"integer reference: {len(test) / elapsed:,.0f} windows/s")
    header, source = generate_header(quantized), generate_c(quantized)
    readings = quantized.readings(test)
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        host = HostModel(header, source, 3, Path(scratch) / "host")
        print(f"host build: {time.perf_counter() - started:.2f} s")
        started = time.perf_counter()
        logits, _ = host.predict(readings)
        elapsed = time.perf_counter() - started
        assert np.array_equal(logits, expected)
        print(f"host C: {len(test) / elapsed:,.0f} windows/s (bit for bit: yes)")
        for target in PROFILES.values():
            started = time.perf_counter()
            firmware = build_firmware(header, source, target, Path(scratch) / target.name)
            built = time.perf_counter() - started
            emulator = Emulator(firmware, 3)
            started = time.perf_counter()
            for index in range(200):
                emulator.predict(readings[index])
            rate = 200 / (time.perf_counter() - started)
            run = emulator.predict(readings[0], count_instructions=True)
            per_function = instructions_per_function(emulator, readings[0])
            print(
                f"{target.name}: build {built:.2f} s, emulator {rate:,.0f} windows/s, "
                f"{run.instructions:,} instructions ({run.instructions / quantized.n_macs():.2f}"
                f" per MAC), stack {run.peak_stack} B, flash {firmware.flash:,} B, "
                f"static RAM {firmware.static_ram:,} B"
            )
            print("   per function: " + ", ".join(f"{k} {v:,}" for k, v in per_function.items()))


if __name__ == "__main__":
    main()
