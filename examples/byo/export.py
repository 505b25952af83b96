#!/usr/bin/python3
"""Bring your own image model: export a PyTorch classifier to ONNX for outpost,
in float32 and in INT8 (static quantization, QDQ format), the way docs/MODELS.md
describes. outpost's own test runs this on a torchvision MobileNetV3-small with
random weights (no pretrained weights offline) and then `outpost models add`.

    /usr/bin/python3 export.py OUTDIR [--arch mobilenet_v3_small] [--classes 6] [--calib PHOTOS_DIR]

Writes OUTDIR/model_fp32.onnx, OUTDIR/model_int8.onnx, OUTDIR/model_nhwc_fp32.onnx (the same
float model taking channels-last input, as Keras/TensorFlow exports do) and OUTDIR/labels.txt.
Swap in your trained model where `build()` makes one; calibrate on ~100 of your
own training photos where `calibration()` makes stand-ins.

Recipe (ONNX Runtime's Python quantizer is not needed):
 1. fold BatchNorm into the convolutions (torch.fx eval-mode fuse);
 2. insert fake-quantization with torch.ao FX `prepare_qat_fx`: per-channel
    symmetric INT8 weights, per-tensor UINT8 activations, plain FakeQuantize
    (ops with fixed ranges — hardsigmoid, sigmoid — and the last layer stay float);
 3. calibrate: run the calibration images with observers on, then freeze them
    (add a short fine-tune here for quantization-aware training);
 4. export at opset 13: each fake-quant becomes QuantizeLinear/DequantizeLinear,
    which ONNX Runtime fuses into integer kernels (QLinearConv, ...);
 5. store the weights as int8 (fold their QuantizeLinear), so the file is ~4x
    smaller than float32.
"""
import argparse
import json
import os
import sys

import numpy as np
import onnx
import torch
import torch.fx.experimental.optimization as fxopt
import torchvision
from onnx import numpy_helper
from torch.ao.quantization import (FakeQuantize, MinMaxObserver,
                                   PerChannelMinMaxObserver, QConfig, QConfigMapping)
from torch.ao.quantization.quantize_fx import prepare_qat_fx

SIZE = 224
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # ImageNet
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def build(arch, classes, calib):
    """Your trained model goes here. outpost's test uses random weights, with
    the last layer widened (torchvision starts it near zero, which makes every
    answer a uniform 1/classes) so that outputs depend on the photo: a test of
    the plumbing and of INT8 fidelity, not of accuracy."""
    torch.manual_seed(0)
    m = getattr(torchvision.models, arch)(weights=None, num_classes=classes)
    last = [x for x in m.modules() if isinstance(x, torch.nn.Linear)][-1]
    torch.nn.init.normal_(last.weight, 0, 0.3)
    # Untrained BatchNorm statistics (mean 0, var 1) let activations vanish
    # layer by layer; set them from data, as training would have.
    for b in m.modules():
        if isinstance(b, torch.nn.BatchNorm2d):
            b.momentum = None  # cumulative average
    m.train()
    with torch.no_grad():
        for i in range(0, len(calib), 16):
            m(calib[i:i + 16])
    return m.eval()


def calibration(n=64, folder=None):
    """Calibration photos, normalised as the model's training did: JPEG/PNG
    files from folder (use ~100 of your own training photos), or stand-ins
    (smooth random colour fields) without one."""
    if folder:
        from PIL import Image
        xs = []
        for f in sorted(os.listdir(folder))[:n]:
            if not f.lower().endswith((".jpg", ".jpeg", ".png")):
                continue
            img = Image.open(os.path.join(folder, f)).convert("RGB")
            side = min(img.size)
            left, top = (img.size[0] - side) // 2, (img.size[1] - side) // 2
            img = img.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.BICUBIC)
            xs.append(torch.from_numpy(np.asarray(img, np.float32) / 255).permute(2, 0, 1))
        if not xs:
            raise SystemExit(f"no JPEG or PNG photos in {folder}")
        return (torch.stack(xs) - MEAN) / STD
    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(SIZE, SIZE), mode="bicubic")
    x = (x + 0.1 * torch.rand(n, 3, SIZE, SIZE, generator=g)).clamp(0, 1)
    return (x - MEAN) / STD


class NHWC(torch.nn.Module):
    """The same model taking channels-last input, as Keras/TensorFlow exports do."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x.permute(0, 3, 1, 2))


def export(model, path, nhwc=False):
    if nhwc:
        model = NHWC(model).eval()
    shape = (1, SIZE, SIZE, 3) if nhwc else (1, 3, SIZE, SIZE)
    torch.onnx.export(model, torch.zeros(*shape), path, opset_version=13,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def quantize(model, calib):
    fused = fxopt.fuse(model)  # 1. BatchNorm folded (eval mode)
    qc = QConfig(
        activation=FakeQuantize.with_args(observer=MinMaxObserver, quant_min=0, quant_max=255,
                                          dtype=torch.quint8, qscheme=torch.per_tensor_affine),
        weight=FakeQuantize.with_args(observer=PerChannelMinMaxObserver, quant_min=-128, quant_max=127,
                                      dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0))
    mapping = (QConfigMapping().set_global(qc)
               .set_object_type(torch.nn.Hardsigmoid, None).set_object_type(torch.nn.functional.hardsigmoid, None)
               .set_object_type(torch.nn.Sigmoid, None).set_object_type(torch.sigmoid, None))
    # The last layer stays float: its output is the logits, whose spread
    # between classes is small next to their range (common practice: first
    # and last layers in higher precision).
    last = [n for n, x in fused.named_modules() if isinstance(x, torch.nn.Linear)][-1]
    mapping = mapping.set_module_name(last, None)
    q = prepare_qat_fx(fused.train(), mapping, example_inputs=(calib[:1],))  # 2.
    q.eval()
    with torch.no_grad():  # 3. observers see the calibration set, then freeze
        for i in range(0, len(calib), 16):
            q(calib[i:i + 16])
    q.apply(torch.ao.quantization.disable_observer)
    return q


def fold_weight_quantization(path):
    """5. QuantizeLinear(constant float weight) -> the int8 constant itself."""
    m = onnx.load(path)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    const = {}  # output name -> initializer name, through Identity nodes
    for n in g.node:
        if n.op_type == "Identity" and n.input[0] in inits:
            const[n.output[0]] = n.input[0]
    for name in inits:
        const[name] = name
    keep = []
    for n in g.node:
        if n.op_type == "QuantizeLinear" and n.input[0] in const and all(i in const for i in n.input[1:]):
            w = numpy_helper.to_array(inits[const[n.input[0]]])
            scale = numpy_helper.to_array(inits[const[n.input[1]]])
            zp = numpy_helper.to_array(inits[const[n.input[2]]]) if len(n.input) > 2 else np.zeros_like(scale, np.uint8)
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            if scale.ndim == 1 and scale.size > 1:
                shape = [1] * w.ndim
                shape[axis] = -1
                scale, zpf = scale.reshape(shape), zp.reshape(shape).astype(np.float32)
            else:
                zpf = zp.astype(np.float32)
            lo, hi = (-128, 127) if zp.dtype == np.int8 else (0, 255)
            q = np.clip(np.round(w / scale) + zpf, lo, hi).astype(zp.dtype)
            g.initializer.append(numpy_helper.from_array(q, n.output[0] + "_int"))
            for other in g.node:
                for k, i in enumerate(other.input):
                    if i == n.output[0]:
                        other.input[k] = n.output[0] + "_int"
            continue
        keep.append(n)
    del g.node[:]
    g.node.extend(keep)
    # Per-tensor scales and zero points exported as shape [1]: ONNX Runtime's
    # fused integer kernels (QLinearMul, ...) want scalars.
    inits = {i.name: i for i in g.initializer}
    for n in g.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            for name in n.input[1:]:
                t = inits.get(name)
                if t is not None and list(t.dims) == [1]:
                    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).reshape(()), name))
    # drop what nothing reads any more
    while True:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if n.op_type == "Identity" and n.output[0] not in used]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    live = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    onnx.checker.check_model(m)
    onnx.save(m, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--arch", default="mobilenet_v3_small")
    ap.add_argument("--classes", type=int, default=6)
    ap.add_argument("--calib", help="folder of calibration photos (JPEG/PNG)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    calib = calibration(folder=a.calib)
    model = build(a.arch, a.classes, calib)
    export(model, os.path.join(a.out, "model_fp32.onnx"))
    export(model, os.path.join(a.out, "model_nhwc_fp32.onnx"), nhwc=True)  # Keras-style layout
    q = quantize(model, calib)
    export(q, os.path.join(a.out, "model_int8.onnx"))
    fold_weight_quantization(os.path.join(a.out, "model_int8.onnx"))
    # Reference answers for the exported files: what PyTorch computes on a
    # few fixed inputs, in float and with the fake quantization the INT8
    # file encodes. ONNX Runtime must reproduce both (outpost's test).
    ref = calibration(8)
    with torch.no_grad():
        r32, r8 = model(ref), q(ref)
    ref.numpy().astype("<f4").tofile(os.path.join(a.out, "ref_inputs.f32"))
    with open(os.path.join(a.out, "ref.json"), "w") as f:
        json.dump({"shape": list(ref.shape), "fp32": r32.tolist(), "int8": r8.tolist()}, f)
    labels = ["healthy", "leaf_spot", "rust", "blight", "mosaic", "not_a_leaf"][:a.classes]
    labels += [f"class_{i}" for i in range(len(labels), a.classes)]
    with open(os.path.join(a.out, "labels.txt"), "w") as f:
        f.write("\n".join(labels) + "\n")
    for f in ("model_fp32.onnx", "model_int8.onnx"):
        print(f, os.path.getsize(os.path.join(a.out, f)), "bytes")


if __name__ == "__main__":
    import warnings
    warnings.filterwarnings("ignore")
    sys.exit(main())
