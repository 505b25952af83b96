#!/usr/bin/python3
"""Trains outpost's crop-disease DEMO classifier on procedurally generated leaf images.

No public crop dataset is reachable from our build machines, so this script draws its own
leaves: several leaf shapes, veins, backgrounds (soil, grass, paper, skin), lighting, blur,
and five conditions — healthy, leaf_spot, rust, blight, mosaic. A small MobileNet-style CNN
is trained in float32, then fine-tuned with quantization-aware training and exported twice:

  crop_disease_fp32.onnx   float32
  crop_disease_int8.onnx   QDQ (QuantizeLinear/DequantizeLinear) graph that ONNX Runtime runs in INT8

It also writes the held-out evaluation set the Go tests use (eval/*.png, 96x96, never seen in
training: different random seed) and calibration.json (softmax temperature fitted on a
validation set). Accuracy is measured afterwards in Go through ONNX Runtime (see the model card).

Run with Debian's python3 (python3-torch, python3-onnx, python3-pil, python3-numpy):
    /usr/bin/python3 train.py            # ~5 minutes on 2 cores
"""
import json
import math
import os
import random
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter

LABELS = ["healthy", "leaf_spot", "rust", "blight", "mosaic"]
SIZE = 96
MEAN = [0.5, 0.5, 0.5]
STD = [0.25, 0.25, 0.25]
HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------- image generator


def noise(rng, h, w, cells):
    """Smooth value noise in [0,1]: a random grid upsampled bicubically."""
    g = rng.random((cells, cells)).astype(np.float32)
    img = Image.fromarray((g * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 255.0


def background(rng, n):
    kind = rng.integers(4)
    base = {0: (110, 80, 50), 1: (60, 110, 40), 2: (225, 220, 205), 3: (200, 150, 120)}[int(kind)]
    base = np.array(base, np.float32) * rng.uniform(0.7, 1.2, 3)
    tex = noise(rng, n, n, int(rng.integers(4, 24)))[..., None]
    img = base * (0.75 + 0.5 * tex) + rng.normal(0, 8, (n, n, 3))
    return np.clip(img, 0, 255)


def leaf_polygon(rng, n):
    cx, cy = n / 2 + rng.uniform(-n * 0.08, n * 0.08, 2)
    length = n * rng.uniform(0.38, 0.48)
    width = length * rng.uniform(0.3, 0.7)
    shape = rng.uniform(0.5, 2.0)  # 0.5 round .. 2 lanceolate
    ang = rng.uniform(0, 2 * math.pi)
    pts = []
    for t in np.linspace(0, 2 * math.pi, 90, endpoint=False):
        y = length * math.cos(t)
        x = width * math.sin(t) * (abs(math.sin(t)) ** (shape - 1 if shape > 1 else 0)) * (1 - 0.25 * math.cos(t))
        if rng.random() < 0.1:
            x *= rng.uniform(0.93, 1.0)  # ragged edge
        pts.append((cx + x * math.cos(ang) - y * math.sin(ang), cy + x * math.sin(ang) + y * math.cos(ang)))
    tip = (cx - length * math.sin(ang) * -1, cy + length * math.cos(ang))
    base = (cx + length * math.sin(ang) * -1, cy - length * math.cos(ang))
    return pts, base, tip, ang, length


def draw_leaf(rng, n, label):
    img = background(rng, n)
    pts, base, tip, ang, length = leaf_polygon(rng, n)
    mask_img = Image.new("L", (n, n), 0)
    ImageDraw.Draw(mask_img).polygon(pts, fill=255)
    mask = np.asarray(mask_img, np.float32)[..., None] / 255.0

    green = np.array([rng.uniform(40, 90), rng.uniform(110, 175), rng.uniform(25, 70)], np.float32)
    leaf = green * (0.8 + 0.35 * noise(rng, n, n, 10)[..., None]) + rng.normal(0, 5, (n, n, 3))

    # veins: midrib and laterals, lighter green lines
    vein = Image.new("L", (n, n), 0)
    d = ImageDraw.Draw(vein)
    d.line([base, tip], fill=255, width=max(1, n // 64))
    for k in range(int(rng.integers(4, 9))):
        f = (k + 1) / 10
        px, py = base[0] + (tip[0] - base[0]) * f, base[1] + (tip[1] - base[1]) * f
        for side in (-1, 1):
            a = ang + side * rng.uniform(0.6, 1.0) + math.pi / 2 * 0
            ex = px + side * math.cos(ang) * length * 0.45 + (tip[0] - base[0]) * 0.12
            ey = py + side * math.sin(ang) * length * 0.45 + (tip[1] - base[1]) * 0.12
            d.line([(px, py), (ex, ey)], fill=150, width=1)
    v = np.asarray(vein, np.float32)[..., None] / 255.0
    leaf = leaf * (1 - 0.25 * v) + np.array([170, 210, 120], np.float32) * 0.25 * v

    lesion = Image.new("RGB", (n, n), (0, 0, 0))
    lmask = Image.new("L", (n, n), 0)
    dl, dm = ImageDraw.Draw(lesion), ImageDraw.Draw(lmask)

    def inside():
        for _ in range(50):
            x, y = rng.uniform(0, n, 2)
            if mask[int(y), int(x), 0] > 0.5:
                return x, y
        return n / 2, n / 2

    if label == "leaf_spot":
        for _ in range(int(rng.integers(3, 11))):
            x, y = inside()
            r = rng.uniform(1.5, 4.5) * n / 96
            dl.ellipse([x - r - 2, y - r - 2, x + r + 2, y + r + 2], fill=(205, 195, 70))
            dm.ellipse([x - r - 2, y - r - 2, x + r + 2, y + r + 2], fill=200)
            c = tuple(int(v) for v in rng.uniform([60, 35, 15], [100, 60, 30]))
            dl.ellipse([x - r, y - r, x + r, y + r], fill=c)
            dm.ellipse([x - r, y - r, x + r, y + r], fill=255)
    elif label == "rust":
        cx, cy = inside()
        for _ in range(int(rng.integers(20, 70))):
            x, y = cx + rng.normal(0, n * 0.15), cy + rng.normal(0, n * 0.15)
            if not (0 <= x < n and 0 <= y < n) or mask[int(y), int(x), 0] < 0.5:
                continue
            r = rng.uniform(0.7, 1.8) * n / 96
            c = tuple(int(v) for v in rng.uniform([180, 80, 20], [230, 130, 50]))
            dl.ellipse([x - r, y - r, x + r, y + r], fill=c)
            dm.ellipse([x - r, y - r, x + r, y + r], fill=255)
    elif label == "blight":
        for _ in range(int(rng.integers(1, 4))):
            x, y = inside()
            r = rng.uniform(8, 22) * n / 96
            poly = [(x + r * rng.uniform(0.5, 1.2) * math.cos(a), y + r * rng.uniform(0.5, 1.2) * math.sin(a))
                    for a in np.linspace(0, 2 * math.pi, 14, endpoint=False)]
            dl.polygon(poly, fill=tuple(int(v) for v in rng.uniform([70, 55, 35], [130, 105, 70])))
            dm.polygon(poly, fill=255)
        lesion = lesion.filter(ImageFilter.GaussianBlur(1))
    elif label == "mosaic":
        m = noise(rng, n, n, int(rng.integers(5, 10)))
        thr = rng.uniform(0.45, 0.6)
        yel = np.clip((m - thr) * 6, 0, 1)
        leaf = leaf * (1 - yel[..., None] * 0.8) + np.array([215, 205, 70], np.float32) * yel[..., None] * 0.8

    lm = np.asarray(lmask, np.float32)[..., None] / 255.0 * mask  # lesions only on the leaf
    leaf = leaf * (1 - lm) + np.asarray(lesion, np.float32) * lm
    img = img * (1 - mask) + leaf * mask

    # lighting gradient, blur, sensor noise
    gx, gy = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n))
    a = rng.uniform(0, 2 * math.pi)
    light = rng.uniform(0.65, 1.2) + rng.uniform(0, 0.35) * (gx * math.cos(a) + gy * math.sin(a))
    img = np.clip(img * light[..., None] + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    out = Image.fromarray(img)
    if rng.random() < 0.6:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 1.2)))
    return out


def sample(rng, label):
    n = int(rng.integers(96, 161))  # drawn at several sizes, resized like the Go pipeline does
    return draw_leaf(rng, n, label).resize((SIZE, SIZE), Image.BICUBIC)


def dataset(seed, per_class):
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(per_class * len(LABELS)):
        y = i % len(LABELS)
        xs.append(np.asarray(sample(rng, LABELS[y]), np.uint8))
        ys.append(y)
    return np.stack(xs), np.array(ys)


def to_tensor(xs):
    x = torch.from_numpy(xs).float().div(255).permute(0, 3, 1, 2)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)

# ---------------------------------------------------------------- model


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin, cout, k=3, s=1, groups=1):
        super().__init__(nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def dwsep(cin, cout, s):
    return nn.Sequential(ConvBNReLU(cin, cin, 3, s, groups=cin), ConvBNReLU(cin, cout, 1))


class LeafNet(nn.Module):
    def __init__(self, n_classes=len(LABELS)):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.features = nn.Sequential(
            ConvBNReLU(3, 16, 3, 2),
            dwsep(16, 32, 1), dwsep(32, 64, 2), dwsep(64, 64, 1),
            dwsep(64, 128, 2), dwsep(128, 128, 1), dwsep(128, 160, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(160, n_classes)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        x = self.pool(self.features(x)).flatten(1)
        return self.dequant(self.fc(x))

    def fold(self):
        """Folds each BatchNorm into its conv (eval-mode fusion), so the QDQ
        export is Q → DQ → Conv → Relu → Q: the pattern ONNX Runtime turns
        into QLinearConv. (QAT-mode fusion keeps BN and a Div in the graph,
        which ORT then runs in float around fake-quant nodes.)"""
        self.eval()
        for m in self.modules():
            if isinstance(m, ConvBNReLU):
                torch.ao.quantization.fuse_modules(m, ["0", "1", "2"], inplace=True)


def run_epoch(model, x, y, opt, bs=64):
    model.train()
    perm = torch.randperm(len(x))
    total = 0.0
    for i in range(0, len(x), bs):
        idx = perm[i:i + bs]
        xb = x[idx]
        if random.random() < 0.5:
            xb = torch.flip(xb, dims=[3])
        loss = F.cross_entropy(model(xb), y[idx], label_smoothing=0.05)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    return total / len(x)


@torch.no_grad()
def logits_of(model, x, bs=200):
    model.eval()
    return torch.cat([model(x[i:i + bs]) for i in range(0, len(x), bs)])


def export(model, path):
    model.eval()
    torch.onnx.export(model, torch.zeros(1, 3, SIZE, SIZE), path, opset_version=13,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def main():
    torch.manual_seed(0)
    random.seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print("generating data...", flush=True)
    xtr, ytr = dataset(1, int(os.environ.get("PER_CLASS", "1400")))
    xva, yva = dataset(2, 100)
    xev, yev = dataset(3, 20)  # the committed held-out evaluation set
    Xtr, Ytr = to_tensor(xtr), torch.from_numpy(ytr)
    Xva, Yva = to_tensor(xva), torch.from_numpy(yva)

    model = LeafNet()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    epochs = int(os.environ.get("EPOCHS", "12"))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    for ep in range(epochs):
        loss = run_epoch(model, Xtr, Ytr, opt)
        sched.step()
        acc = (logits_of(model, Xva).argmax(1) == Yva).float().mean().item()
        print(f"epoch {ep + 1}/{epochs}: loss {loss:.3f} val acc {acc:.3f}", flush=True)
    export(model, os.path.join(HERE, "crop_disease_fp32.onnx"))

    # Temperature scaling on the validation set (calibrated confidence).
    lv = logits_of(model, Xva)
    best = min((F.cross_entropy(lv / t, Yva).item(), t) for t in np.arange(0.5, 3.01, 0.05))
    temperature = round(float(best[1]), 2)
    print(f"temperature {temperature} (val NLL {best[0]:.3f})")

    # Quantization-aware fine-tuning -> QDQ export.
    from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver, QConfig
    qmodel = LeafNet()
    qmodel.load_state_dict(model.state_dict())
    qmodel.fold()
    qmodel.train()
    qmodel.qconfig = QConfig(
        activation=FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                          dtype=torch.quint8, qscheme=torch.per_tensor_affine, reduce_range=False),
        weight=FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=-128, quant_max=127,
                                      dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, reduce_range=False))
    torch.ao.quantization.prepare_qat(qmodel, inplace=True)
    qopt = torch.optim.AdamW(qmodel.parameters(), lr=1e-4)
    for ep in range(int(os.environ.get("QAT_EPOCHS", "2"))):
        run_epoch(qmodel, Xtr, Ytr, qopt)
        acc = (logits_of(qmodel, Xva).argmax(1) == Yva).float().mean().item()
        print(f"qat epoch {ep + 1}: val acc {acc:.3f}", flush=True)
    qmodel.apply(torch.ao.quantization.disable_observer)
    export(qmodel, os.path.join(HERE, "crop_disease_int8.onnx"))

    os.makedirs(os.path.join(HERE, "eval"), exist_ok=True)
    for i, (img, y) in enumerate(zip(xev, yev)):
        Image.fromarray(img).save(os.path.join(HERE, "eval", f"{i:03d}_{LABELS[y]}.png"), optimize=True)
    with open(os.path.join(HERE, "calibration.json"), "w") as f:
        json.dump({"temperature": temperature, "val_nll": round(best[0], 4),
                   "train_per_class": int(len(xtr) / len(LABELS)), "epochs": epochs}, f, indent=2)
    # A few full-size photos for demos and `outpost infer` examples.
    rng = np.random.default_rng(4)
    os.makedirs(os.path.join(HERE, "samples"), exist_ok=True)
    for lab in LABELS:
        draw_leaf(rng, 480, lab).save(os.path.join(HERE, "samples", f"{lab}.jpg"), quality=88)
    print("done")


if __name__ == "__main__":
    sys.exit(main())
