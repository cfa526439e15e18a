#!/usr/bin/env python3
"""Golden tensors for the blood-cell UNets and their pre-processing, made once.

Usage:
    pip install tensorflow-cpu h5py opencv-python-headless safetensors numpy
    python3 models/tools/make_cbc_golden.py --wheel cbc-1.1.0-py3-none-any.whl \
        [--image tests/fixtures/smear_cbc.jpg] [--out tests/fixtures/golden/cbc_smear.safetensors]

The reference is TensorFlow running the network of `cbc` 1.1.0 (`do_unet()`,
rebuilt here with Keras layers) with the package's own .h5 weights, NOT the
converted safetensors: the test in daemon/src/model/unet.rs then checks the
converter and the candle implementation together.

Written tensors (kept small):
  clahe_bgr  u8  [192, 256, 3]  OpenCV's LAB CLAHE (clip 2, 8x8 tiles) of
                                tests/fixtures/smear_cbc_crop.png, the image's top-left
                                256x192 saved losslessly (so both sides decode the same pixels)
  tile       f32 [1, 3, 188, 188] one pre-processed tile (CLAHE, BGR, scaled to [-1, 1]),
                                NCHW, cut at y0/x0 of the CLAHE'd image
  {rbc,wbc,plt}_mask f32 [1, 1, 100, 100], rbc_edge f32 [1, 1, 100, 100]
"""

import argparse
import os
import tempfile
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import h5py
import numpy as np
import tensorflow as tf
from safetensors.numpy import save_file

TILE_Y, TILE_X = 150, 260


def conv_bn(x, filters, kernel=3, transpose=False):
    if transpose:
        x = tf.keras.layers.Conv2DTranspose(filters, 2, 2, "valid")(x)
    else:
        x = tf.keras.layers.Conv2D(filters, kernel, 1, "valid")(x)
    x = tf.keras.layers.BatchNormalization(epsilon=1e-3)(x)
    return tf.keras.layers.Activation("relu")(x)


def build(net):
    inp = tf.keras.layers.Input((188, 188, 3))
    convs = []

    def cb(x, f, k=3, t=False):
        y = conv_bn(x, f, k, t)
        convs.append(y)
        return y

    e1 = cb(cb(cb(inp, 96), 32, 1), 32)
    e2 = cb(cb(tf.keras.layers.MaxPooling2D(2, 2)(e1), 64), 64)
    e3 = cb(cb(tf.keras.layers.MaxPooling2D(2, 2)(e2), 128), 128)
    e4 = cb(cb(tf.keras.layers.MaxPooling2D(2, 2)(e3), 256), 256)
    d = e4
    for f, skip, crop in [(128, e3, 4), (64, e2, 16), (32, e1, 40)]:
        up = cb(d, f, t=True)
        d = tf.keras.layers.concatenate([tf.keras.layers.Cropping2D(crop)(skip), up])
        d = cb(cb(d, f), f)
    heads = [tf.keras.layers.Conv2D(1, 1, activation="sigmoid")(d)]
    if net == "rbc":
        heads.append(tf.keras.layers.Conv2D(1, 1, activation="sigmoid")(d))
    return tf.keras.Model(inp, heads)


def load_h5(model, path, net):
    # Set weights by the original layer names, in creation order.
    with h5py.File(path, "r") as f:
        def get(name):
            g = f[name][name]
            return {k.split(":")[0]: np.array(v) for k, v in g.items()}
        conv_layers = [l for l in model.layers
                       if isinstance(l, (tf.keras.layers.Conv2D, tf.keras.layers.Conv2DTranspose))]
        bn_layers = [l for l in model.layers if isinstance(l, tf.keras.layers.BatchNormalization)]
        names, ci, ti = [], 0, 0
        for l in conv_layers[:len(bn_layers)]:
            if isinstance(l, tf.keras.layers.Conv2DTranspose):
                names.append("conv2d_transpose" + ("" if ti == 0 else f"_{ti}"))
                ti += 1
            else:
                names.append("conv2d" + ("" if ci == 0 else f"_{ci}"))
                ci += 1
        for k, (l, n) in enumerate(zip(conv_layers, names)):
            w = get(n)
            l.set_weights([w["kernel"], w["bias"]])
            b = get("batch_normalization" + ("" if k == 0 else f"_{k}"))
            bn_layers[k].set_weights([b["gamma"], b["beta"], b["moving_mean"], b["moving_variance"]])
        heads = conv_layers[len(bn_layers):]
        for l, n in zip(heads, ["mask", "edge"] if net == "rbc" else ["mask"]):
            w = get(n)
            l.set_weights([w["kernel"], w["bias"]])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheel", required=True)
    ap.add_argument("--image", default="tests/fixtures/smear_cbc.jpg")
    ap.add_argument("--out", default="tests/fixtures/golden/cbc_smear.safetensors")
    args = ap.parse_args()

    bgr = cv2.imread(args.image)
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(lab[..., 0])
    clahe = cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)
    tile = clahe[TILE_Y:TILE_Y + 188, TILE_X:TILE_X + 188].astype(np.float32) * 2 / 255 - 1
    crop_path = os.path.join(os.path.dirname(args.image), "smear_cbc_crop.png")
    cv2.imwrite(crop_path, bgr[:192, :256])
    crop = cv2.imread(crop_path)
    clab = cv2.cvtColor(crop, cv2.COLOR_BGR2LAB)
    clab[..., 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(clab[..., 0])
    out = {
        "clahe_bgr": np.ascontiguousarray(cv2.cvtColor(clab, cv2.COLOR_LAB2BGR)),
        "tile": np.ascontiguousarray(tile.transpose(2, 0, 1)[None]),
    }
    tmp = tempfile.mkdtemp()
    with zipfile.ZipFile(args.wheel) as z:
        for net in ["rbc", "wbc", "plt"]:
            path = os.path.join(tmp, f"{net}.h5")
            open(path, "wb").write(z.read(f"cbc-1.1.0.data/data/share/cbc/weights/{net}.h5"))
            model = build(net)
            load_h5(model, path, net)
            res = model(tile[None], training=False)
            res = res if isinstance(res, (list, tuple)) else [res]
            out[f"{net}_mask"] = np.asarray(res[0]).transpose(0, 3, 1, 2).copy()
            if net == "rbc":
                out["rbc_edge"] = np.asarray(res[1]).transpose(0, 3, 1, 2).copy()
            print(net, "mask mean", float(out[f"{net}_mask"].mean()))
    save_file(out, args.out, metadata={"tile_yx": f"{TILE_Y},{TILE_X}",
                                       "image": os.path.basename(args.image)})
    print("wrote", args.out)


if __name__ == "__main__":
    main()
