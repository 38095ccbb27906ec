"""Encoding with an exported ONNX bundle on onnxruntime alone (no torch import).

`wenlan export onnx` writes the bundle (`export.onnx`); `bundle.load_bundle` reads it and
`encode.encode_images` / `encode.encode_texts` turn images and texts into the same
L2-normalised vectors the PyTorch model gives.
"""
