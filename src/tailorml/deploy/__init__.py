"""Deployment of a trained model on the wearable, by concern:

- `int8`: post-training int8 quantization (TFLite Micro's scheme, `fixed_point`), the
  integer reference (`quantize`) and the device's rules around it (`device_rules`), the C99
  generated from it (`c`), onnxruntime's int8 as an anchor (`onnx_int8`) and the parity
  ladder that proves float, int8 and C agree (`parity`);
- `target`: where the C runs — this machine's build (`host`), the microcontroller profiles,
  cross-compiler and emulator (`mcu`), the cycle model (`cycles`) and the budget (`budget`);
- `learner`: guarded learning of the last layer on the device — the Python reference and
  settings (`ondevice`, `float_head`, `reservoir`, `traces`), its C (`c`) built for this
  machine (`host`) and the emulated target (`mcu`), and the simulated life of a device
  (`simulate`, `daily`, `simulate_report`).

`report` draws deploy.html from an export (its parity ladder and budgets). The commands
(`tailorml deploy export|report|simulate`) are jobs: `tailorml.jobs.deploy_export`,
`tailorml.jobs.deploy_simulate`. Families depend one way: int8 <- target <- learner.
"""
