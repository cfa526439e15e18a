#!/usr/bin/env python3
"""Golden tensors for the age net's parity test, from the ORIGINAL runtime (TensorFlow.js).

    cd /tmp && npm pack @vladmandic/face-api@1.7.15 && tar xzf vladmandic-face-api-1.7.15.tgz
    mkdir -p /tmp/tfjs && cd /tmp/tfjs && npm init -y >/dev/null \
        && npm install @tensorflow/tfjs@4.22.0 @tensorflow/tfjs-backend-wasm@4.22.0
    python3 -m venv /tmp/skinvenv && /tmp/skinvenv/bin/pip install numpy pillow safetensors
    NODE_PATH=/tmp/tfjs/node_modules /tmp/skinvenv/bin/python models/tools/make_age_golden.py \
        --package /tmp/package

Runs face-api's own AgeGenderNet (its Node build, TensorFlow.js CPU backend) through
`faceapi_age.cjs` on a real face crop and on two random crops, runs the numpy reference
(`skin_numpy_ref.age`) from the converted models/skin/age.safetensors on the same pixels, and
writes models/skin/goldens/age.safetensors: `image` (uint8 HWC RGB, 112x112), `input` (the
float32 NCHW tensor the model takes) and `age` (TensorFlow.js's years), with the numpy
reference's max abs differences in its metadata.

The crop: /work/shared/data/faces/lisa/lisa1.jpg (CC-0, the package author's own image in
webmorphR.stim), box (80, 220, 520, 660) -> 112x112 with Pillow's antialiased bilinear filter; the
uint8 pixels are stored, so a test need not reproduce the resize.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import skin_numpy_ref as ref  # noqa: E402
from safetensors_det import check_roundtrip, save_deterministic  # noqa: E402

PHOTO = "/work/shared/data/faces/lisa/lisa1.jpg"
FACE_BOX = (80, 220, 520, 660)
SIZE = 112


def tfjs_ages(package, crops):
    with tempfile.TemporaryDirectory() as d:
        files = []
        for i, c in enumerate(crops):
            f = os.path.join(d, f"{i}.raw")
            with open(f, "wb") as fh:
                fh.write(np.ascontiguousarray(c, np.uint8).tobytes())
            files.append(f)
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "faceapi_age.cjs")
        out = subprocess.run(["node", script, package, *files], check=True,
                             capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return np.array(r["ages"], np.float32), f"TensorFlow.js {r['tfjs']} ({r['backend']} backend)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--package", required=True, help="unpacked @vladmandic/face-api 1.7.15 (package/)")
    ap.add_argument("--photo", default=PHOTO)
    ap.add_argument("--weights", default="models/skin/age.safetensors")
    ap.add_argument("--out", default="models/skin/goldens/age.safetensors")
    a = ap.parse_args()
    img = Image.open(a.photo).convert("RGB")
    face = np.asarray(img.crop(FACE_BOX).resize((SIZE, SIZE), Image.BILINEAR), np.uint8)
    rng = np.random.default_rng(20261201)
    crops = [face] + [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(2)]
    ages, runtime = tfjs_ages(a.package, crops)
    w = load_file(a.weights)
    mine = ref.age(w, ref.age_input(np.stack(crops)))
    diffs = {name: float(abs(x - y)) for name, x, y in zip(["photo", "random0", "random1"], ages, mine)}
    tensors = {"image": face, "input": ref.age_input(face[None]), "age": ages[:1]}
    meta = {"runtime": runtime, "photo": "lisa/lisa1.jpg (CC-0)", "box": str(FACE_BOX),
            "size": str(SIZE), "numpy_ref_max_abs_diff_years": json.dumps(diffs)}
    save_deterministic(tensors, a.out, metadata=meta)
    check_roundtrip(tensors, a.out, metadata=meta)
    print(json.dumps({"runtime": runtime, "ages": ages.tolist(), "numpy_ref": mine.tolist(),
                      "max_abs_diff_years": diffs}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
