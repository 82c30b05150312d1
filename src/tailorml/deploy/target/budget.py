"""What a generated model costs on a target profile, and whether it fits the budget.

Flash is text + rodata + data of the linked image, static RAM is data + bss, the stack is
the peak measured in the emulator; RAM against the budget is static RAM plus that peak.
Latency is judged by a conservative cycle model (`tailorml.deploy.target.cycles`: the Cortex-M4
TRM's cycles per executed instruction, pipeline refills and the profile's flash wait
states), stated beside the older best-case estimate (instructions times 1.25 cycles). Every
window run on the target is also checked against the logits the integer reference computed
for it: a budget is only reported for code that computes the right thing. The first windows
also run in a build for a core that traps unaligned access (-mno-unaligned-access, every
halfword and word access checked as CCR.UNALIGN_TRP would).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tailorml.deploy.int8.parity import Rung
from tailorml.deploy.target.cycles import CycleCounter
from tailorml.deploy.target.mcu import Emulator, TargetProfile, build_firmware, gcc_sizes
from tailorml.errors import DeployError
from tailorml.progress import SILENT, Reporter

INSTRUCTION_COUNT_WINDOWS = 3  # windows whose instructions are counted (the largest is used)


def measure_target(
    header: str,
    source: str,
    target: TargetProfile,
    readings: np.ndarray,
    expected_logits: np.ndarray,
    directory: Path,
    on_window=None,
) -> dict:
    """Build for `target` in `directory`, run every window of `readings` in the emulator,
    and return sizes, stack, instructions, latency and pass/fail against the budget."""
    firmware = build_firmware(header, source, target, Path(directory))
    emulator = Emulator(firmware, expected_logits.shape[1])
    instructions, stack, mismatches = [], 0, 0
    counter, costs = CycleCounter(emulator), []
    for index, window in enumerate(readings):
        run = emulator.predict(window, count_instructions=index < INSTRUCTION_COUNT_WINDOWS)
        if run.instructions is not None:
            instructions.append(run.instructions)
            costs.append(counter.count(window))
        stack = max(stack, run.peak_stack)
        mismatches += int(not np.array_equal(run.logits, expected_logits[index]))
        if on_window is not None:
            on_window()
    if not instructions:
        raise DeployError("no window to run on the target; the budget needs at least one")
    alignment = check_alignment(header, source, target, readings, expected_logits, directory)
    count = max(instructions)
    latency_ms = count * target.cycles_per_instruction / target.clock_hz * 1000
    worst = max(costs, key=lambda cost: cost.cycles)
    conservative_ms = worst.latency_ms(target.clock_hz)
    ram = firmware.static_ram + stack
    checks = {
        "flash": firmware.flash <= target.budget_flash_bytes,
        "ram": ram <= target.budget_ram_bytes,
        "latency": conservative_ms <= target.budget_latency_ms,
        "fits_device": firmware.flash <= target.flash_bytes and ram <= target.ram_bytes,
    }
    return {
        "target": target.to_dict(),
        **firmware.sizes(),
        "peak_stack": stack,
        "ram": ram,
        "instructions": count,
        "cycles_estimate": round(count * target.cycles_per_instruction),
        "latency_ms": latency_ms,
        "cycles_conservative": worst.to_dict(),
        "latency_conservative_ms": conservative_ms,
        "windows_run": len(readings),
        "windows_identical": len(readings) - mismatches,
        "strict_alignment": alignment,
        "checks": checks,
        "passed": all(checks.values()),
        "gcc": gcc_sizes(header, source, target, Path(directory) / "gcc"),
    }


def check_alignment(
    header: str,
    source: str,
    target: TargetProfile,
    readings: np.ndarray,
    expected_logits: np.ndarray,
    directory: Path,
) -> dict:
    """Build as firmware for a core that traps unaligned access is built
    (-mno-unaligned-access) and run the first windows with every halfword and word access
    checked for alignment, as CCR.UNALIGN_TRP would: the logits must be the reference's and
    nothing may trap (an `UnalignedAccess` says where it would)."""
    firmware = build_firmware(
        header, source, target, Path(directory) / "strict", strict_alignment=True
    )
    emulator = Emulator(firmware, expected_logits.shape[1], trap_unaligned=True)
    count = min(len(readings), INSTRUCTION_COUNT_WINDOWS)
    for index in range(count):
        if not np.array_equal(emulator.predict(readings[index]).logits, expected_logits[index]):
            raise DeployError(
                f"the {target.cpu} build without unaligned access computed other logits "
                "than the reference; please report this"
            )
    return {
        "windows_trapping_unaligned_access": count,
        "unaligned_accesses": 0,
        "flash": firmware.flash,
        "compiler_flag": "-mno-unaligned-access",
    }


def emulated_rung(
    header: str,
    source: str,
    target: TargetProfile,
    check: dict[str, np.ndarray],
    directory: Path,
    reporter: Reporter = SILENT,
) -> tuple[Rung, dict]:
    """The ladder's last rung and the target's budget: `measure_target` on the check windows
    (`tailorml.deploy.int8.parity.check_windows`: readings, the reference's logits, the
    individuals they are of), built in `directory`; refused unless every window's logits are
    the reference's."""
    readings, expected = check["readings"], check["logits"]
    with reporter.task(f"emulating {target.cpu} ({target.name})", total=len(readings)) as task:
        budget = measure_target(header, source, target, readings, expected, directory, task.advance)
    rung = Rung(
        name=f"host C -> emulated {target.cpu}",
        windows=budget["windows_run"],
        individuals=len(check["individuals"]),
        decision_agreement=float("nan"),
        identical_logits=budget["windows_identical"] == budget["windows_run"],
        max_logit_difference=float("nan"),
    )
    if not rung.identical_logits:
        raise DeployError(
            f"the {target.cpu} build computed other logits than the reference on "
            f"{budget['windows_run'] - budget['windows_identical']} windows; "
            "the export is not trustworthy — please report this"
        )
    rung.decision_agreement = 1.0
    rung.max_logit_difference = 0.0
    return rung, budget
