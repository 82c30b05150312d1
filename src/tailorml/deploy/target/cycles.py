"""A conservative cycle count of one inference on the emulated Cortex-M, from its trace.

The emulator counts instructions, and the 1.25 cycles per instruction the budget used to
assume is the best case. Here every executed instruction is decoded (capstone) and costed
with the upper end of the Cortex-M4 Technical Reference Manual's cycle table (ARM DDI 0439,
"Cortex-M4 instruction set summary"): loads 2 cycles each (no credit for pipelined
neighbours), stores 2, load/store multiple 1 + registers, divides 12, a taken branch 1 + 3
(the longest pipeline refill), everything else 1. Flash wait states are added where a real
STM32 would wait on flash: every taken branch (a fetch from a new line) and every data read
from flash (the const weights, literal pools), with no credit for the flash accelerator's
caches. So the figure is an upper bound of the core's own cycles at the stated clock, not a
measurement on silicon.

Why our own: no library of the field gives Cortex-M cycle counts for a trace (unicorn does
not model timing; Arm's cycle models are not open); this is the TRM's table applied to the
emulator's trace.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tailorml.deploy.target.mcu import FLASH_BASE, Emulator, TargetProfile

LOAD_CYCLES = 2
STORE_CYCLES = 2
DIVIDE_CYCLES = 12
BRANCH_REFILL_CYCLES = 3  # P in the TRM: 1 to 3 cycles to refill the pipeline
LOADS = ("ldr", "ldrb", "ldrh", "ldrsb", "ldrsh", "ldrex", "ldrt")
STORES = ("str", "strb", "strh", "strex", "strt")
DOUBLE = ("ldrd", "strd")
MULTIPLE = ("ldm", "ldmia", "ldmdb", "ldmfd", "stm", "stmia", "stmdb", "stmfd", "push", "pop")
DIVIDES = ("sdiv", "udiv")
CONDITIONS = frozenset(
    [
        "eq",
        "ne",
        "cs",
        "hs",
        "cc",
        "lo",
        "mi",
        "pl",
        "vs",
        "vc",
        "hi",
        "ls",
        "ge",
        "lt",
        "gt",
        "le",
        "al",
    ]
)


@dataclass(frozen=True)
class CycleCount:
    """One inference's trace, costed: instructions, cycles by the TRM table, taken
    branches, data reads from flash, and the total with flash wait states."""

    instructions: int
    core_cycles: int
    taken_branches: int
    flash_reads: int
    wait_states: int
    cycles: int

    def latency_ms(self, clock_hz: int) -> float:
        return self.cycles / clock_hz * 1000

    def to_dict(self) -> dict:
        return asdict(self)


def base_mnemonic(mnemonic: str) -> str:
    """`ldr.w` -> `ldr`, `bne` -> `b`, `addseq` stays as it is (only branches drop a
    condition: other conditional instructions cost the same either way)."""
    name = mnemonic.lower().split(".")[0]
    if name.startswith("b") and len(name) == 3 and name[1:] in CONDITIONS:
        return "b"
    return name


def instruction_cycles(mnemonic: str, registers: int) -> int:
    """Cycles of one instruction by the TRM table, before branches and wait states
    (`registers`: how many a load/store multiple moves)."""
    name = base_mnemonic(mnemonic)
    if name in LOADS:
        return LOAD_CYCLES
    if name in STORES:
        return STORE_CYCLES
    if name in DOUBLE:
        return 3
    if name in MULTIPLE:
        return 1 + max(1, registers)
    if name in DIVIDES:
        return DIVIDE_CYCLES
    return 1


class CycleCounter:
    """Hooks on an emulator that cost each executed instruction (decoded once per
    address) and count data reads from flash and taken branches."""

    def __init__(self, emulator: Emulator) -> None:
        from capstone import CS_ARCH_ARM, CS_MODE_MCLASS, CS_MODE_THUMB, Cs

        self.emulator = emulator
        self.disassembler = Cs(CS_ARCH_ARM, CS_MODE_THUMB | CS_MODE_MCLASS)
        self.disassembler.detail = True
        self.flash_end = FLASH_BASE + emulator.firmware.target.flash_bytes
        self._costs: dict[int, int] = {}

    def _cost(self, uc, address: int, size: int) -> int:
        cost = self._costs.get(address)
        if cost is None:
            code = bytes(uc.mem_read(address, size))
            decoded = next(self.disassembler.disasm(code, address), None)
            if decoded is None:
                cost = 1
            else:
                base = decoded.mnemonic.startswith(("ldm", "stm"))  # its first operand
                registers = len(decoded.operands) - (1 if base else 0)
                cost = instruction_cycles(decoded.mnemonic, registers)
            self._costs[address] = cost
        return cost

    def count(self, readings) -> CycleCount:
        """Run one inference (the emulator's `tm_run`) on `readings` and cost its trace."""
        import numpy as np
        from unicorn import UC_HOOK_CODE, UC_HOOK_MEM_READ

        state = {"instructions": 0, "core": 0, "taken": 0, "flash": 0, "next": None}

        def on_code(uc, address, size, _):
            if state["next"] is not None and address != state["next"]:
                state["taken"] += 1
            state["next"] = address + size
            state["instructions"] += 1
            state["core"] += self._cost(uc, address, size)

        def on_read(uc, access, address, size, value, _):
            if FLASH_BASE <= address < self.flash_end:
                state["flash"] += 1

        symbols = self.emulator.firmware.symbols
        self.emulator.uc.mem_write(
            symbols["tm_input"], np.ascontiguousarray(readings, "<i2").tobytes()
        )
        code = self.emulator.add_code_hook(on_code)
        read = self.emulator.uc.hook_add(UC_HOOK_MEM_READ, on_read)
        try:
            self.emulator.run_to_return(self.emulator.entry, "inference", UC_HOOK_CODE)
        finally:
            self.emulator.remove_code_hook(code)
            self.emulator.uc.hook_del(read)
        return costed(state, self.emulator.firmware.target)


def costed(state: dict, target: TargetProfile) -> CycleCount:
    """The total: TRM cycles, a pipeline refill per taken branch, and the target's flash
    wait states per taken branch and per data read from flash."""
    wait = target.flash_wait_states * (state["taken"] + state["flash"])
    cycles = state["core"] + BRANCH_REFILL_CYCLES * state["taken"] + wait
    return CycleCount(
        instructions=state["instructions"],
        core_cycles=state["core"],
        taken_branches=state["taken"],
        flash_reads=state["flash"],
        wait_states=wait,
        cycles=cycles,
    )
