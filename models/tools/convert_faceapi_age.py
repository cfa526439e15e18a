#!/usr/bin/env python3
"""Convert face-api's age and gender net (TinyXception, TensorFlow.js weights) to safetensors.

Usage (the script itself downloads nothing):

    cd /tmp && npm pack @vladmandic/face-api@1.7.15        # -> vladmandic-face-api-1.7.15.tgz
    python3 -m venv /tmp/skinvenv && /tmp/skinvenv/bin/pip install numpy safetensors
    /tmp/skinvenv/bin/python models/tools/convert_faceapi_age.py \
        --tarball /tmp/vladmandic-face-api-1.7.15.tgz

Reads `package/model/age_gender_model-weights_manifest.json` and `age_gender_model.bin` straight
from the npm tarball and writes models/skin/age.safetensors (float32, byte-reproducible through
safetensors_det.py). The weights were trained by Vincent Mühler for face-api.js (MIT) and are
shipped unchanged by Vladimir Mandic's maintained fork @vladmandic/face-api (MIT); see
models/skin/LICENSE-age.

The shard stores most tensors as uint8 with a per-tensor affine quantisation; TensorFlow.js
decodes them (`tf.io.decodeWeights`) as `q * scale + min`, and so does this script, in float64
rounded once to float32. Biases are plain float32.

Layout changes (TensorFlow.js is NHWC with HWIO filters; candle is NCHW with OIHW):
    conv filters [kh,kw,in,out]        -> weight [out,in,kh,kw]
    depthwise filters [kh,kw,C,1]      -> weight [C,1,kh,kw], with a zero bias (TensorFlow's
                                          separable conv adds its one bias after the pointwise)
    fully connected weights [in,out]   -> weight [out,in] (candle's Linear)

Names (the graph is in models/skin/age_graph.md):
    entry.conv_in                        3x3/s2 conv, 3 -> 32
    entry.block{0,1}.{sep0,sep1}.{dw,pw}, entry.block{0,1}.expand
    middle.block{0,1}.{sep0,sep1,sep2}.{dw,pw}
    exit.block.{sep0,sep1}.{dw,pw}, exit.block.expand, exit.sep.{dw,pw}
    fc_age                               512 -> 1 (years)
The gender head (fc/gender) is left out: the appliance does not report gender.
"""

import argparse
import hashlib
import json
import os
import sys
import tarfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_det import check_roundtrip, save_deterministic  # noqa: E402

MANIFEST = "package/model/age_gender_model-weights_manifest.json"
SHARD = "package/model/age_gender_model.bin"
# The files of @vladmandic/face-api 1.7.15 this converter was written against.
SHA256 = {
    MANIFEST: "74b60bf3ebf981bf4e661e9cca3a185614e10b25d797118b62e2a68d3ff2569f",
    SHARD: "49f92bbc0afef2342c4385e4a2b0acb6d7a727c6f0aa539499719a81acf9abaa",
}


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def decode(manifest, shard):
    """tf.io.decodeWeights: name -> float32 array in the manifest's shape."""
    out, off = {}, 0
    for w in manifest["weights"]:
        n = int(np.prod(w["shape"]))
        q = w.get("quantization")
        if q:
            if q["dtype"] != "uint8":
                raise SystemExit(f"{w['name']}: unexpected quantisation {q}")
            raw = np.frombuffer(shard, np.uint8, n, off).astype(np.float64)
            a = (raw * q["scale"] + q["min"]).astype(np.float32)
            off += n
        else:
            if w["dtype"] != "float32":
                raise SystemExit(f"{w['name']}: unexpected dtype {w['dtype']}")
            a = np.frombuffer(shard, "<f4", n, off).astype(np.float32)
            off += 4 * n
        out[w["name"]] = a.reshape(w["shape"])
    if off != len(shard):
        raise SystemExit(f"manifest covers {off} bytes of a {len(shard)}-byte shard")
    return out


def convert(tf):
    t = {}

    def conv(src, dst):
        t[f"{dst}.weight"] = np.ascontiguousarray(tf[f"{src}/filters"].transpose(3, 2, 0, 1))
        t[f"{dst}.bias"] = tf[f"{src}/bias"]

    def sep(src, dst):
        d = tf[f"{src}/depthwise_filter"]  # [3,3,C,1]
        t[f"{dst}.dw.weight"] = np.ascontiguousarray(d.transpose(2, 3, 0, 1))
        t[f"{dst}.dw.bias"] = np.zeros(d.shape[2], np.float32)
        t[f"{dst}.pw.weight"] = np.ascontiguousarray(
            tf[f"{src}/pointwise_filter"].transpose(3, 2, 0, 1))
        t[f"{dst}.pw.bias"] = tf[f"{src}/bias"]

    conv("entry_flow/conv_in", "entry.conv_in")
    for i in range(2):
        s, d = f"entry_flow/reduction_block_{i}", f"entry.block{i}"
        sep(f"{s}/separable_conv0", f"{d}.sep0")
        sep(f"{s}/separable_conv1", f"{d}.sep1")
        conv(f"{s}/expansion_conv", f"{d}.expand")
    for i in range(2):
        for j in range(3):
            sep(f"middle_flow/main_block_{i}/separable_conv{j}", f"middle.block{i}.sep{j}")
    sep("exit_flow/reduction_block/separable_conv0", "exit.block.sep0")
    sep("exit_flow/reduction_block/separable_conv1", "exit.block.sep1")
    conv("exit_flow/reduction_block/expansion_conv", "exit.block.expand")
    sep("exit_flow/separable_conv", "exit.sep")
    t["fc_age.weight"] = np.ascontiguousarray(tf["fc/age/weights"].T)
    t["fc_age.bias"] = tf["fc/age/bias"]
    used = {k for k in tf if not k.startswith("fc/gender/")}
    return t, used


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tarball", required=True, help="npm pack of @vladmandic/face-api 1.7.15")
    ap.add_argument("--out", default="models/skin/age.safetensors")
    a = ap.parse_args()
    tar_bytes = open(a.tarball, "rb").read()
    with tarfile.open(a.tarball) as tar:
        files = {name: tar.extractfile(name).read() for name in (MANIFEST, SHARD)}
        pkg = json.loads(tar.extractfile("package/package.json").read())
    for name, want in SHA256.items():
        got = sha256(files[name])
        if want is not None and got != want:
            raise SystemExit(f"{name}: sha256 {got}, expected {want}")
    manifest = json.loads(files[MANIFEST])
    if len(manifest) != 1 or manifest[0]["paths"] != ["age_gender_model.bin"]:
        raise SystemExit(f"unexpected manifest layout: {[g['paths'] for g in manifest]}")
    tf = decode(manifest[0], files[SHARD])
    tensors, used = convert(tf)
    if used != set(tf) - {k for k in tf if k.startswith("fc/gender/")}:
        raise SystemExit("not every tensor of the shard was converted")
    meta = {
        "source_package": f"{pkg['name']} {pkg['version']} (npm)",
        "source_tarball_sha256": sha256(tar_bytes),
        "source_manifest_sha256": sha256(files[MANIFEST]),
        "source_shard_sha256": sha256(files[SHARD]),
        "licence": "MIT (face-api.js, Vincent Mühler; @vladmandic/face-api, Vladimir Mandic)",
    }
    save_deterministic(tensors, a.out, metadata=meta)
    check_roundtrip(tensors, a.out, metadata=meta)
    params = sum(v.size for k, v in tensors.items() if not k.endswith("dw.bias"))
    print(json.dumps({**meta, "out": a.out, "out_sha256": sha256(open(a.out, "rb").read()),
                      "tensors": len(tensors), "parameters": int(params)}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
