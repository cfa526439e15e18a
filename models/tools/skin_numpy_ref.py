#!/usr/bin/env python3
"""Plain-numpy reference forward passes of the skin-family models, from the converted safetensors.

Written from the graph documents only (models/skin/face_mesh_graph.md, iris_graph.md,
age_graph.md), as the Rust/candle port should be: NCHW float32 tensors, OIHW conv weights,
explicit (asymmetric) TensorFlow SAME padding. `make_skin_goldens.py` checks these against the
original runtimes (TFLite interpreter; TensorFlow.js through `make_age_golden.py`), which is what
proves the documents right.

    from safetensors.numpy import load_file
    import skin_numpy_ref as ref
    w = load_file("models/skin/face_mesh.safetensors")
    landmarks, flag_logit = ref.face_mesh(w, x)        # x [1,3,192,192] in [0,1]

Needs only numpy (and safetensors to load the weights).
"""

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

F32 = np.float32


# --------------------------------------------------------------------------------------
# ops (NCHW, float32)


def tf_same_pads(n_in, k, s):
    """TensorFlow SAME padding on one axis -> (before, after). 3x3/s2 on even n: (0, 1)."""
    n_out = math.ceil(n_in / s)
    total = max((n_out - 1) * s + k - n_in, 0)
    return total // 2, total - total // 2


def conv2d(x, w, b, stride=1, pads=(0, 0, 0, 0)):
    """Cross-correlation, groups=1. x [N,C,H,W], w [O,C,kH,kW], pads (top, bottom, left, right)."""
    t, bo, l, r = pads
    x = np.pad(x, ((0, 0), (0, 0), (t, bo), (l, r)))
    n, c, h, wd = x.shape
    o, ci, kh, kw = w.shape
    assert ci == c, (x.shape, w.shape)
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    if kh == 1 and kw == 1:
        cols = x[:, :, : (ho - 1) * stride + 1: stride, : (wo - 1) * stride + 1: stride]
        y = np.einsum("nchw,oc->nohw", cols, w[:, :, 0, 0], optimize=True)
    else:
        win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :ho, :wo]
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)
        y = (cols @ w.reshape(o, -1).T).reshape(n, ho, wo, o).transpose(0, 3, 1, 2)
    return (y + b[None, :, None, None]).astype(F32)


def dwconv2d(x, w, b, stride=1, pads=(0, 0, 0, 0)):
    """Depthwise conv: w [C,1,kH,kW]."""
    t, bo, l, r = pads
    x = np.pad(x, ((0, 0), (0, 0), (t, bo), (l, r)))
    n, c, h, wd = x.shape
    _, _, kh, kw = w.shape
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    y = np.zeros((n, c, ho, wo), F32)
    for u in range(kh):
        for v in range(kw):
            patch = x[:, :, u: u + (ho - 1) * stride + 1: stride, v: v + (wo - 1) * stride + 1: stride]
            y += patch * w[None, :, 0, u, v, None, None]
    return y + b[None, :, None, None]


def same(x, k, s):
    h, w = x.shape[2:]
    t, b = tf_same_pads(h, k, s)
    l, r = tf_same_pads(w, k, s)
    return (t, b, l, r)


def prelu(x, alpha):
    return np.where(x >= 0, x, x * alpha[None, :, None, None]).astype(F32)


def relu(x):
    return np.maximum(x, F32(0))


def maxpool(x, k, s):
    win = sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    ho, wo = (x.shape[2] - k) // s + 1, (x.shape[3] - k) // s + 1
    return win[:, :, :ho, :wo].max(axis=(4, 5))


def avgpool2(x):
    """2x2 stride 2, no padding, floor sizes."""
    n, c, h, w = x.shape
    h2, w2 = h // 2, w // 2
    x = x[:, :, : 2 * h2, : 2 * w2].reshape(n, c, h2, 2, w2, 2)
    return ((x[:, :, :, 0, :, 0] + x[:, :, :, 0, :, 1]) + (x[:, :, :, 1, :, 0] + x[:, :, :, 1, :, 1])) * F32(0.25)


def zero_extend(x, c, h, w):
    """Append zero channels / rows / columns at the end (top-left origin kept)."""
    return np.pad(x, ((0, 0), (0, c - x.shape[1]), (0, h - x.shape[2]), (0, w - x.shape[3])))


# --------------------------------------------------------------------------------------
# MediaPipe face mesh (models/skin/face_mesh_graph.md)


def conv_same(w, p, x, stride=1):
    k = w[f"{p}.weight"].shape[2]
    return conv2d(x, w[f"{p}.weight"], w[f"{p}.bias"], stride, same(x, k, stride))


def conv_valid(w, p, x, stride):
    return conv2d(x, w[f"{p}.weight"], w[f"{p}.bias"], stride)


def mp_res_unit(w, p, x, stride):
    """dw3x3(SAME, stride) -> pw1x1 -> + shortcut -> PReLU (face mesh residual unit)."""
    h = dwconv2d(x, w[f"{p}.dw.weight"], w[f"{p}.dw.bias"], stride, same(x, 3, stride))
    h = conv2d(h, w[f"{p}.pw.weight"], w[f"{p}.pw.bias"])
    sc = x if stride == 1 else maxpool(x, 2, 2)
    sc = zero_extend(sc, h.shape[1], h.shape[2], h.shape[3])
    return prelu(sc + h, w[f"{p}.prelu.weight"])


FACE_BACKBONE_STRIDES = [1, 1, 2, 1, 1, 2, 1, 1, 2, 1, 1, 2, 1, 1]


def face_mesh(w, x):
    """x [1,3,192,192] RGB in [0,1] -> (landmarks [N,468,3] in 192-px input coords, flag logit [N])."""
    h = prelu(conv_same(w, "stem.conv", x, 2), w["stem.prelu.weight"])
    for i, s in enumerate(FACE_BACKBONE_STRIDES):
        h = mp_res_unit(w, f"backbone.{i}", h, s)
    m = h
    for i, s in enumerate([2, 1, 1]):
        m = mp_res_unit(w, f"mesh.{i}", m, s)
    m = prelu(conv2d(m, w["mesh.proj.conv.weight"], w["mesh.proj.conv.bias"]), w["mesh.proj.prelu.weight"])
    m = mp_res_unit(w, "mesh.3", m, 1)
    m = conv_valid(w, "mesh.out", m, 3)  # 3x3 VALID on 3x3 -> 1x1
    f = mp_res_unit(w, "flag.0", h, 2)
    f = prelu(conv2d(f, w["flag.proj.conv.weight"], w["flag.proj.conv.bias"]), w["flag.proj.prelu.weight"])
    f = mp_res_unit(w, "flag.1", f, 1)
    f = conv_valid(w, "flag.out", f, 3)
    n = x.shape[0]
    return m.reshape(n, 468, 3), f.reshape(n)


# --------------------------------------------------------------------------------------
# MediaPipe iris (models/skin/iris_graph.md)


def iris_unit(w, p, x):
    """reduce (1x1, or 2x2/s2 VALID) -> PReLU -> dw3x3 SAME -> pw1x1 -> + shortcut -> PReLU."""
    k = w[f"{p}.reduce.weight"].shape[2]
    stride = 2 if k == 2 else 1
    h = conv2d(x, w[f"{p}.reduce.weight"], w[f"{p}.reduce.bias"], stride)
    h = prelu(h, w[f"{p}.reduce_prelu.weight"])
    h = dwconv2d(h, w[f"{p}.dw.weight"], w[f"{p}.dw.bias"], 1, same(h, 3, 1))
    h = conv2d(h, w[f"{p}.pw.weight"], w[f"{p}.pw.bias"])
    sc = x if stride == 1 else maxpool(x, 2, 2)
    sc = zero_extend(sc, h.shape[1], h.shape[2], h.shape[3])
    return prelu(sc + h, w[f"{p}.prelu.weight"])


def iris(w, x):
    """x [1,3,64,64] RGB in [0,1] (a left eye) -> (contour [N,71,3], iris [N,5,3]) in 64-px input coords."""
    h = prelu(conv_same(w, "stem.conv", x, 2), w["stem.prelu.weight"])
    for i in range(10):
        h = iris_unit(w, f"backbone.{i}", h)
    c, r = h, h
    for i in range(8):
        c = iris_unit(w, f"contour.{i}", c)
        r = iris_unit(w, f"iris.{i}", r)
    c = conv_valid(w, "contour.out", c, 1)  # 2x2 VALID on 2x2 -> 1x1
    r = conv_valid(w, "iris.out", r, 1)
    n = x.shape[0]
    return c.reshape(n, 71, 3), r.reshape(n, 5, 3)


# --------------------------------------------------------------------------------------
# face-api's age net, TinyXception (models/skin/age_graph.md)

AGE_MEANS = np.array([122.782, 117.001, 104.298], F32)


def age_input(chip_u8):
    """[N,112,112,3] uint8 RGB face crops -> [N,3,112,112] float32: (pixel - mean) / 255."""
    v = chip_u8.astype(F32)
    v -= AGE_MEANS
    v /= F32(255.0)
    return np.ascontiguousarray(v.transpose(0, 3, 1, 2))


def _sep(w, p, x):
    """Depthwise 3x3 SAME (no bias) -> pointwise 1x1 + bias."""
    h = dwconv2d(x, w[f"{p}.dw.weight"], w[f"{p}.dw.bias"], 1, same(x, 3, 1))
    return conv2d(h, w[f"{p}.pw.weight"], w[f"{p}.pw.bias"])


def _maxpool_same(x):
    """3x3 stride 2 max-pool, TensorFlow SAME (the padding never wins: -inf)."""
    t, b, l, r = same(x, 3, 2)
    x = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=-np.inf)
    return maxpool(x, 3, 2)


def _reduction(w, p, x, activate_input=True):
    h = relu(x) if activate_input else x
    h = _sep(w, f"{p}.sep0", h)
    h = _maxpool_same(_sep(w, f"{p}.sep1", relu(h)))
    return h + conv_same(w, f"{p}.expand", x, 2)


def age(w, x):
    """x [N,3,112,112] (see age_input) -> age in years [N]."""
    h = relu(conv_same(w, "entry.conv_in", x, 2))
    h = _reduction(w, "entry.block0", h, activate_input=False)
    h = _reduction(w, "entry.block1", h)
    for i in range(2):
        r = h
        for j in range(3):
            r = _sep(w, f"middle.block{i}.sep{j}", relu(r))
        h = r + h
    h = _reduction(w, "exit.block", h)
    h = relu(_sep(w, "exit.sep", h))
    feat = h.mean(axis=(2, 3), dtype=F32)
    return (feat @ w["fc_age.weight"].T + w["fc_age.bias"])[:, 0].astype(F32)
