"""The int8 model: TFLite Micro's fixed-point arithmetic, quantization and the integer
reference, the device's rules around the model, the generated C99, onnxruntime's int8 as an
anchor, and the parity ladder (float -> int8 -> C)."""
