#!/usr/bin/env python3
"""Golden tensors for the skin-family parity tests, from the ORIGINAL runtimes.

    python3 -m venv /tmp/skinvenv
    /tmp/skinvenv/bin/pip install numpy pillow safetensors ai-edge-litert
    /tmp/skinvenv/bin/pip download --no-deps mediapipe==0.10.21 -d /tmp/wheels \
        --python-version 3.11 --platform manylinux_2_28_x86_64 --only-binary=:all:
    /tmp/skinvenv/bin/python models/tools/make_skin_goldens.py \
        --mediapipe-wheel /tmp/wheels/mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl

Runs face_landmark.tflite and iris_landmark.tflite (read from the mediapipe wheel) in the LiteRT
(TFLite) interpreter of `ai-edge-litert`. (The age net's golden comes from TensorFlow.js:
`make_age_golden.py`.)

Inputs come from one CC-0 photo, /work/shared/data/faces/lisa/lisa1.jpg (600x800, the package
author's own image in webmorphR.stim), cropped by fixed boxes chosen by looking at the image
(Pillow `Image.crop(box)` then `Image.resize(size, Image.BILINEAR)`, i.e. Pillow's antialiased
bilinear filter; the resulting uint8 pixels are stored, so a test need not reproduce the resize):

    face box  (80, 220, 520, 660) -> 192x192 (face mesh)
    eye box   (140, 274, 300, 434) -> 64x64 (iris; the eye on the image's left, unflipped)

Writes models/skin/goldens/{face_mesh,iris}.safetensors; each holds `image` (uint8 HWC RGB),
`input` (the exact float32 tensor given to the runtime, in NCHW; TFLite got its NHWC transpose)
and the runtime's outputs. It then runs the numpy reference (`skin_numpy_ref.py`) from the
converted safetensors on the same inputs, and on two random inputs per model, and prints the
max abs differences (they are also recorded in each golden's metadata).
"""

import argparse
import importlib.metadata
import json
import os
import sys
import zipfile

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import skin_numpy_ref as ref  # noqa: E402
from safetensors_det import check_roundtrip, save_deterministic as save_file  # noqa: E402

PHOTO = "/work/shared/data/faces/lisa/lisa1.jpg"
FACE_BOX = (80, 220, 520, 660)
EYE_BOX = (140, 274, 300, 434)
FACE_TFLITE = "mediapipe/modules/face_landmark/face_landmark.tflite"
IRIS_TFLITE = "mediapipe/modules/iris_landmark/iris_landmark.tflite"


LITERT = f"ai-edge-litert {importlib.metadata.version('ai-edge-litert')} (TFLite interpreter, XNNPACK, 1 thread)"


def crop(img, box, size):
    return np.asarray(img.crop(box).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def to_unit(u8):
    """uint8 HWC -> float32 NCHW in [0,1]: pixel * (1/255) as MediaPipe computes it."""
    x = u8.astype(np.float32) * np.float32(1.0 / 255.0)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


class Tfl:
    def __init__(self, model_bytes):
        self.it = Interpreter(model_content=model_bytes, num_threads=1)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]
        self.outs = {d["name"]: d["index"] for d in self.it.get_output_details()}

    def __call__(self, x_nchw):
        self.it.set_tensor(self.inp["index"], np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1)))
        self.it.invoke()
        return {k: self.it.get_tensor(i).copy() for k, i in self.outs.items()}


def write(tensors, path, metadata):
    save_file(tensors, path, metadata=metadata)
    check_roundtrip(tensors, path, metadata)


def maxdiff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mediapipe-wheel", required=True)
    ap.add_argument("--photo", default=PHOTO)
    ap.add_argument("--weights", default="models/skin")
    ap.add_argument("--out", default="models/skin/goldens")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(20261130)
    img = Image.open(a.photo).convert("RGB")
    mp = zipfile.ZipFile(a.mediapipe_wheel)
    report = {}

    # ---- face mesh
    face = Tfl(mp.read(FACE_TFLITE))
    w = load_file(os.path.join(a.weights, "face_mesh.safetensors"))
    u8 = crop(img, FACE_BOX, 192)
    x = to_unit(u8)
    o = face(x)
    lm, flag = o["conv2d_21"].reshape(468, 3), o["conv2d_31"].reshape(1)
    r_lm, r_flag = ref.face_mesh(w, x)
    d = {"photo_landmarks": maxdiff(lm, r_lm[0]), "photo_flag_logit": maxdiff(flag, r_flag)}
    for k in range(2):
        xr = rng.random((1, 3, 192, 192), dtype=np.float32)
        orr = face(xr)
        r_lm2, r_flag2 = ref.face_mesh(w, xr)
        d[f"random{k}_landmarks"] = maxdiff(orr["conv2d_21"].reshape(468, 3), r_lm2[0])
        d[f"random{k}_flag_logit"] = maxdiff(orr["conv2d_31"].reshape(1), r_flag2)
    report["face_mesh"] = {"max_abs_diff": d, "flag_logit": float(flag[0]),
                           "landmark_range_px": [float(lm[:, :2].min()), float(lm[:, :2].max())]}
    write({"image": u8, "input": x, "landmarks": lm, "face_flag_logit": flag},
              os.path.join(a.out, "face_mesh.safetensors"),
              metadata={"runtime": LITERT,
                        "photo": "lisa/lisa1.jpg (CC-0)", "box": str(FACE_BOX), "size": "192",
                        "numpy_ref_max_abs_diff": json.dumps(d)})

    # ---- iris
    irm = Tfl(mp.read(IRIS_TFLITE))
    w = load_file(os.path.join(a.weights, "iris.safetensors"))
    u8e = crop(img, EYE_BOX, 64)
    xe = to_unit(u8e)
    o = irm(xe)
    ct, ir = o["output_eyes_contours_and_brows"].reshape(71, 3), o["output_iris"].reshape(5, 3)
    r_ct, r_ir = ref.iris(w, xe)
    d = {"photo_contour": maxdiff(ct, r_ct[0]), "photo_iris": maxdiff(ir, r_ir[0])}
    for k in range(2):
        xr = rng.random((1, 3, 64, 64), dtype=np.float32)
        orr = irm(xr)
        r_ct2, r_ir2 = ref.iris(w, xr)
        d[f"random{k}_contour"] = maxdiff(orr["output_eyes_contours_and_brows"].reshape(71, 3), r_ct2[0])
        d[f"random{k}_iris"] = maxdiff(orr["output_iris"].reshape(5, 3), r_ir2[0])
    report["iris"] = {"max_abs_diff": d, "iris_centre_px": ir[0].tolist()}
    write({"image": u8e, "input": xe, "eye_contour": ct, "iris": ir},
              os.path.join(a.out, "iris.safetensors"),
              metadata={"runtime": LITERT,
                        "photo": "lisa/lisa1.jpg (CC-0)", "box": str(EYE_BOX), "size": "64",
                        "numpy_ref_max_abs_diff": json.dumps(d)})

    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())
