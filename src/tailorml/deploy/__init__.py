"""Deployment of a trained model: on the wearable (int8 C code, microcontroller builds) and
as files a runtime can execute (ONNX, with onnxruntime's int8 beside ours as an anchor)."""
