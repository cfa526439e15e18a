"""Byte-reproducible safetensors writer (numpy).

`safetensors.numpy.save_file` stores `__metadata__` through a Rust HashMap, so its key order (and
so the file's sha256) changes from run to run. The manifest pins sha256s, so the skin converters
write the same format themselves: 8-byte little-endian header length, a JSON header with sorted
keys padded with spaces to a multiple of 8, then the tensors' raw little-endian bytes in name
order. `safetensors.numpy.load_file` and candle read it as usual.
"""

import json
import struct

import numpy as np

DTYPES = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("float64"): "F64",
          np.dtype("uint8"): "U8", np.dtype("int8"): "I8", np.dtype("int32"): "I32",
          np.dtype("int64"): "I64"}


def save_deterministic(tensors, path, metadata=None):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        b = a.tobytes()
        header[name] = {"dtype": DTYPES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def check_roundtrip(tensors, path, metadata=None):
    """Read the file back with the `safetensors` package (the reference reader, same Rust crate
    as candle's) and require identical tensors and metadata."""
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        assert sorted(f.keys()) == sorted(tensors), path
        assert (f.metadata() or {}) == {str(k): str(v) for k, v in (metadata or {}).items()}, path
        for k in f.keys():
            a = f.get_tensor(k)
            assert a.dtype == tensors[k].dtype and a.shape == tensors[k].shape, k
            assert np.array_equal(a, tensors[k]), k
