#!/usr/bin/env python3
"""TensorFlow (CPU) running the three cbc 1.1.0 UNets on batches of 188x188
tiles, as the peer for `cargo bench --bench cells` (unet3_tiles/N).

    pip install tensorflow-cpu h5py numpy
    python3 benches/peers/tensorflow_cbc.py --wheel cbc-1.1.0-py3-none-any.whl [--threads 2]

Same nets (rebuilt and loaded from the package's .h5 files by
models/tools/make_cbc_golden.py), same tile size; inputs are random in [-1, 1].
Prints the median of 10 runs after 3 warm-ups per batch size.
"""
import argparse
import os
import sys
import tempfile
import time
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "models", "tools"))

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheel", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from make_cbc_golden import build, load_h5
    tmp = tempfile.mkdtemp()
    nets = []
    with zipfile.ZipFile(args.wheel) as z:
        for net in ["rbc", "wbc", "plt"]:
            path = os.path.join(tmp, f"{net}.h5")
            open(path, "wb").write(z.read(f"cbc-1.1.0.data/data/share/cbc/weights/{net}.h5"))
            m = build(net)
            load_h5(m, path, net)
            nets.append(tf.function(lambda x, m=m: m(x, training=False)))
    for n in [1, 4, 8]:
        x = tf.constant(np.random.uniform(-1, 1, (n, 188, 188, 3)).astype(np.float32))
        for _ in range(3):
            [f(x) for f in nets]
        times = []
        for _ in range(10):
            t = time.perf_counter()
            outs = [f(x) for f in nets]
            _ = [np.asarray(o[0] if isinstance(o, (list, tuple)) else o) for o in outs]
            times.append(time.perf_counter() - t)
        med = sorted(times)[len(times) // 2]
        print(f"tensorflow {tf.__version__} {args.threads}t unet3_tiles/{n}: {med * 1e3:.1f} ms "
              f"({n / med:.2f} tiles/s)")


if __name__ == "__main__":
    main()
