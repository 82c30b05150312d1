"""On-device learning of the last layer behind the device's own gates: the Python reference
and its settings (`ondevice`, `float_head`, `reservoir`, `traces`), the C (`c`) on this
machine (`host`) and on the emulated target (`mcu`), and a device's simulated life
(`simulate`, `daily`, `simulate_report`)."""
