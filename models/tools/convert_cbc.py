#!/usr/bin/env python3
"""Convert the three blood-cell UNets of the PyPI package `cbc` 1.1.0 to safetensors.

Usage:
    pip install h5py safetensors numpy
    python3 models/tools/convert_cbc.py [--wheel PATH] [--out-dir models/cbc]

Without --wheel the script runs `pip download --no-deps cbc==1.1.0` into a
temporary directory. The wheel ships Keras weights-only files
(`share/cbc/weights/{rbc,wbc,plt}.h5`, TensorFlow 2.9); the architecture is
the `do_unet()` function of the package's script, restated in
daemon/src/model/unet.rs.

Every convolution in that net is followed by a BatchNormalization (Keras
default epsilon 1e-3), which this script folds into the convolution:

    s = gamma / sqrt(var + 1e-3);  w' = w * s (per output channel);  b' = (b - mean) * s + beta

Layouts are changed to what candle expects:
    Conv2D kernel          [kh, kw, in, out] -> [out, in, kh, kw]
    Conv2DTranspose kernel [kh, kw, out, in] -> [in, out, kh, kw]

Keras names layers in creation order (conv2d, conv2d_1, ...;
batch_normalization_k is the k-th convolution of either kind), so the order
below is the order in which do_unet() creates them.
"""

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

import h5py
import numpy as np
from safetensors.numpy import save_file

WHEEL = "cbc==1.1.0"
NETS = ["rbc", "wbc", "plt"]
EPS = 1e-3

# (candle name, keras layer, kind) in do_unet() creation order.
LAYERS = [
    ("enc1.0", "conv2d", "conv"),
    ("enc1.1", "conv2d_1", "conv"),
    ("enc1.2", "conv2d_2", "conv"),
    ("enc2.0", "conv2d_3", "conv"),
    ("enc2.1", "conv2d_4", "conv"),
    ("enc3.0", "conv2d_5", "conv"),
    ("enc3.1", "conv2d_6", "conv"),
    ("enc4.0", "conv2d_7", "conv"),
    ("enc4.1", "conv2d_8", "conv"),
    ("dec1.up", "conv2d_transpose", "convT"),
    ("dec1.0", "conv2d_9", "conv"),
    ("dec1.1", "conv2d_10", "conv"),
    ("dec2.up", "conv2d_transpose_1", "convT"),
    ("dec2.0", "conv2d_11", "conv"),
    ("dec2.1", "conv2d_12", "conv"),
    ("dec3.up", "conv2d_transpose_2", "convT"),
    ("dec3.0", "conv2d_13", "conv"),
    ("dec3.1", "conv2d_14", "conv"),
]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_wheel() -> str:
    tmp = tempfile.mkdtemp()
    subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps",
                           "--quiet", WHEEL, "-d", tmp])
    (name,) = [f for f in os.listdir(tmp) if f.endswith(".whl")]
    return os.path.join(tmp, name)


def layer(f, name):
    g = f[name][name]
    return {k.split(":")[0]: np.array(v, dtype=np.float32) for k, v in g.items()}


def convert(h5_path: str, net: str):
    out = {}
    with h5py.File(h5_path, "r") as f:
        for k, (cname, kname, kind) in enumerate(LAYERS):
            w = layer(f, kname)
            bn_name = "batch_normalization" if k == 0 else f"batch_normalization_{k}"
            bn = layer(f, bn_name)
            s = bn["gamma"] / np.sqrt(bn["moving_variance"] + EPS)
            bias = (w["bias"] - bn["moving_mean"]) * s + bn["beta"]
            if kind == "conv":
                kernel = w["kernel"].transpose(3, 2, 0, 1) * s[:, None, None, None]
            else:
                kernel = w["kernel"].transpose(3, 2, 0, 1) * s[None, :, None, None]
            assert kernel.shape[0 if kind == "conv" else 1] == bias.shape[0], (cname, kernel.shape)
            out[f"{cname}.weight"] = np.ascontiguousarray(kernel, dtype=np.float32)
            out[f"{cname}.bias"] = bias.astype(np.float32)
        heads = ["mask", "edge"] if net == "rbc" else ["mask"]
        for head in heads:
            w = layer(f, head)
            out[f"head.{head}.weight"] = np.ascontiguousarray(
                w["kernel"].transpose(3, 2, 0, 1), dtype=np.float32)
            out[f"head.{head}.bias"] = w["bias"]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheel")
    ap.add_argument("--out-dir", default="models/cbc")
    args = ap.parse_args()
    wheel = args.wheel or fetch_wheel()
    wheel_bytes = open(wheel, "rb").read()
    print(f"wheel {os.path.basename(wheel)} sha256 {sha256(wheel_bytes)}")
    os.makedirs(args.out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp()
    with zipfile.ZipFile(wheel) as z:
        lic = z.read("cbc-1.1.0.dist-info/LICENSE")
        open(os.path.join(args.out_dir, "LICENSE"), "wb").write(lic)
        for net in NETS:
            member = f"cbc-1.1.0.data/data/share/cbc/weights/{net}.h5"
            data = z.read(member)
            path = os.path.join(tmp, f"{net}.h5")
            open(path, "wb").write(data)
            tensors = convert(path, net)
            dst = os.path.join(args.out_dir, f"{net}.safetensors")
            save_file(tensors, dst, metadata={"source": f"{WHEEL} {member}",
                                              "bn_folded": f"eps={EPS}"})
            params = sum(t.size for t in tensors.values())
            print(f"{net}: source sha256 {sha256(data)} -> {dst} "
                  f"sha256 {sha256(open(dst, 'rb').read())} params {params}")


if __name__ == "__main__":
    main()
