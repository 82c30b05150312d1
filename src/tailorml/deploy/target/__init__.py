"""Where the generated C runs: built for this machine (`host`), cross-compiled for a
Cortex-M profile and run in the emulator (`mcu`), its cycles (`cycles`) and whether it fits
the profile's budget (`budget`)."""
