#!/usr/bin/python3
"""Builds tiny.onnx, the few-hundred-byte model runtime tests run on.

y = x @ W + b  with x float32[N,4] (N dynamic), W float32[4,3], b float32[3];
also z = i + 1 for an int64 input i[2], so tests cover a second dtype.
W and b are fixed so tests can compute the expected output in Go.

Run with Debian's python3 (python3-onnx): /usr/bin/python3 make_tiny.py
"""
import onnx
from onnx import TensorProto, helper

W = [float(i) / 10 for i in range(12)]  # row-major 4x3
B = [0.5, -1.0, 2.0]

graph = helper.make_graph(
    [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["y"]),
        helper.make_node("Add", ["i", "one"], ["z"]),
    ],
    "tiny",
    [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
        helper.make_tensor_value_info("i", TensorProto.INT64, [2]),
    ],
    [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),
        helper.make_tensor_value_info("z", TensorProto.INT64, [2]),
    ],
    initializer=[
        helper.make_tensor("W", TensorProto.FLOAT, [4, 3], W),
        helper.make_tensor("b", TensorProto.FLOAT, [3], B),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
    ],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="outpost")
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, "tiny.onnx")
print("wrote tiny.onnx", len(model.SerializeToString()), "bytes")
