"""Photographic leaf renderer for the crop-disease demo model (sim-to-real by domain randomisation).

The first generator drew flat green polygons on texture; real leaves were refused as not_a_leaf.
This one tries to make a real leaf look like something the model has seen: natural backgrounds
(garden foliage out of focus, soil and mulch, grass, a palm holding the leaf, wood, paper, concrete,
sky), leaf outlines from lanceolate to round with serrated, lobed and heart-shaped margins, midrib,
lateral veins and a reticulate network, the two halves lit differently (a leaf is folded along its
midrib), gloss, a cast shadow and dappled light, several leaves per frame and leaves running off
the frame, then a camera: exposure, colour temperature 2,500-10,000 K only partly corrected by
white balance, vignetting, shot and read noise, defocus or motion blur, JPEG.

Conditions are drawn on the leaf in its own coordinates: leaf_spot (dark spots with yellow halos),
rust (clustered orange pustules), blight (large necrotic areas from the margin or within, up to most
of the leaf, sometimes with concentric rings), mosaic (yellow-green mottling), and yellowing or
browning that comes with disease. Dried leaves (brown, tan) are drawn as their own kind "dry": they
are leaves, so the model must not call them not_a_leaf, but nothing here says which disease dried
them (train.py gives them a soft target spread over the five leaf classes).

HELD_OUT_* kinds are never used for training or calibration: the photographic test set uses them so
that it measures renders the model never saw, not only new seeds.
"""
import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

BACKGROUNDS = ["foliage", "soil", "grass", "hand", "wood", "paper", "concrete", "sky"]
HELD_OUT_BACKGROUNDS = ["mat"]          # a woven mat: only in the photographic test set
MARGINS = ["entire", "serrate", "cordate", "lobed"]
HELD_OUT_MARGINS = ["palmate"]          # maple-like palmate leaves: only in the test set


def vnoise(rng, h, w, cells):
    """Smooth value noise in [0,1]: a random grid upsampled bicubically."""
    cells = max(2, int(cells))
    g = rng.random((cells, cells)).astype(np.float32)
    img = Image.fromarray((g * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 255.0


def hsv(h, s, v):
    """One colour from hue in degrees, saturation and value in [0,1] -> RGB 0..255."""
    h = (h % 360) / 60
    c = v * s
    x = c * (1 - abs(h % 2 - 1))
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h) % 6]
    m = v - c
    return np.array([r + m, g + m, b + m], np.float32) * 255


def kelvin(k):
    """Approximate RGB of a black body at k kelvin (Tanner Helland's fit), green = 1."""
    t = k / 100
    r = 255 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
    g = 99.4708025861 * math.log(t) - 161.1195681661 if t <= 66 else 288.1221695283 * (t - 60) ** -0.0755148492
    b = 255 if t >= 66 else (0 if t <= 19 else 138.5177312231 * math.log(t - 10) - 305.0447927307)
    v = np.clip(np.array([r, g, b], np.float32), 1, 255)
    return v / v[1]


def blurred(img, radius):
    if radius <= 0.05:
        return img
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    return np.asarray(pil.filter(ImageFilter.GaussianBlur(radius)), np.float32)


# ---------------------------------------------------------------- backgrounds


def background(rng, n, kind):
    gx, gy = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n))
    if kind == "foliage":  # a garden behind the leaf, out of focus
        img = np.broadcast_to(hsv(rng.uniform(80, 140), rng.uniform(0.4, 0.8), rng.uniform(0.1, 0.35)), (n, n, 3)).copy()
        pil = Image.fromarray(img.astype(np.uint8))
        d = ImageDraw.Draw(pil)
        for _ in range(int(rng.integers(20, 70))):
            x, y = rng.uniform(-0.1, 1.1, 2) * n
            r = rng.uniform(0.03, 0.2) * n
            if rng.random() < 0.1:
                col = hsv(rng.uniform(190, 220), rng.uniform(0, 0.3), rng.uniform(0.7, 1))  # sky through leaves
            else:
                col = hsv(rng.uniform(60, 150), rng.uniform(0.3, 0.9), rng.uniform(0.15, 0.8))
            d.ellipse([x - r, y - r * rng.uniform(0.4, 1), x + r, y + r], fill=tuple(int(c) for c in col))
        return blurred(np.asarray(pil, np.float32), rng.uniform(0.02, 0.08) * n)
    if kind == "soil":
        base = hsv(rng.uniform(15, 40), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.6))
        img = base * (0.6 + 0.8 * vnoise(rng, n, n, rng.integers(8, 50))[..., None])
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(pil)
        for _ in range(int(rng.integers(0, 30))):  # stones and twigs
            x, y = rng.uniform(0, n, 2)
            if rng.random() < 0.6:
                r = rng.uniform(1, n / 25)
                d.ellipse([x - r, y - r * 0.7, x + r, y + r * 0.7], fill=tuple(int(c) for c in hsv(rng.uniform(0, 50), rng.uniform(0, 0.3), rng.uniform(0.3, 0.8))))
            else:
                a = rng.uniform(0, math.pi)
                ln = rng.uniform(0.05, 0.3) * n
                d.line([(x, y), (x + ln * math.cos(a), y + ln * math.sin(a))],
                       fill=tuple(int(c) for c in hsv(rng.uniform(20, 40), rng.uniform(0.3, 0.6), rng.uniform(0.2, 0.5))), width=int(rng.integers(1, 4)))
        return np.asarray(pil, np.float32)
    if kind == "grass":
        img = np.broadcast_to(hsv(rng.uniform(70, 120), rng.uniform(0.5, 0.9), rng.uniform(0.1, 0.3)), (n, n, 3)).copy()
        pil = Image.fromarray(img.astype(np.uint8))
        d = ImageDraw.Draw(pil)
        lean = rng.uniform(-0.4, 0.4)
        for _ in range(int(rng.integers(80, 250))):
            x, y = rng.uniform(0, n), rng.uniform(0, n * 1.2)
            ln = rng.uniform(0.1, 0.5) * n
            a = -math.pi / 2 + lean + rng.normal(0, 0.25)
            col = hsv(rng.uniform(50, 120), rng.uniform(0.3, 0.9), rng.uniform(0.2, 0.85))
            d.line([(x, y), (x + ln * math.cos(a), y + ln * math.sin(a))], fill=tuple(int(c) for c in col), width=int(rng.integers(1, 4)))
        return blurred(np.asarray(pil, np.float32), rng.uniform(0, 0.01) * n)
    if kind == "hand":  # a palm under the leaf
        t = rng.uniform(0, 1)
        tone = np.array([60 + 180 * t, 40 + 150 * t, 30 + 130 * t], np.float32) * rng.uniform(0.9, 1.1, 3)
        img = tone * (0.8 + 0.3 * vnoise(rng, n, n, 4)[..., None])
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(pil)
        for _ in range(int(rng.integers(2, 6))):  # palm creases
            x, y = rng.uniform(0, n, 2)
            d.arc([x - n * 0.4, y - n * 0.2, x + n * 0.4, y + n * 0.2], rng.uniform(0, 180), rng.uniform(180, 360),
                  fill=tuple(int(c) for c in tone * 0.7), width=1)
        bg = background(rng, n, ["soil", "foliage", "concrete"][int(rng.integers(3))])
        m = np.zeros((n, n), np.float32)  # the hand covers a big blob, the rest is the ground
        mp = Image.new("L", (n, n), 0)
        cx, cy = rng.uniform(0.3, 0.7, 2) * n
        ImageDraw.Draw(mp).ellipse([cx - n * 0.6, cy - n * 0.45, cx + n * 0.6, cy + n * 0.6], fill=255)
        m = np.asarray(mp.filter(ImageFilter.GaussianBlur(n / 60)), np.float32)[..., None] / 255
        return np.asarray(pil, np.float32) * m + bg * (1 - m)
    if kind == "wood":
        col = hsv(rng.uniform(18, 38), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.8))
        a = rng.uniform(0, math.pi)
        u = gx * math.cos(a) + gy * math.sin(a)
        img = col * (0.8 + 0.3 * np.sin(u * rng.uniform(20, 80) + 4 * vnoise(rng, n, n, 5))[..., None])
        return img
    if kind == "paper":
        col = hsv(rng.uniform(0, 360), rng.uniform(0, 0.12), rng.uniform(0.7, 0.98))
        return col * (0.92 + 0.1 * vnoise(rng, n, n, 6)[..., None])
    if kind == "concrete":
        v = rng.uniform(0.35, 0.75)
        img = np.broadcast_to(hsv(rng.uniform(0, 60), rng.uniform(0, 0.12), v), (n, n, 3))
        return img * (0.75 + 0.4 * vnoise(rng, n, n, rng.integers(20, 60))[..., None]) + rng.normal(0, 6, (n, n, 1))
    if kind == "sky":
        top = hsv(rng.uniform(195, 225), rng.uniform(0.3, 0.7), rng.uniform(0.7, 1))
        img = top * (1 - 0.3 * gy[..., None]) + 60 * gy[..., None]
        cloud = np.clip((vnoise(rng, n, n, rng.integers(3, 8)) - rng.uniform(0.4, 0.7)) * 4, 0, 1)
        return img * (1 - cloud[..., None]) + 235 * cloud[..., None]
    if kind == "mat":  # held out: a woven mat
        c1 = hsv(rng.uniform(25, 50), rng.uniform(0.2, 0.5), rng.uniform(0.5, 0.85))
        f = rng.uniform(12, 30)
        weave = (np.sin(gx * f * math.pi) > 0) ^ (np.sin(gy * f * math.pi) > 0)
        return c1 * np.where(weave, 1.0, 0.78)[..., None] * (0.9 + 0.15 * vnoise(rng, n, n, 8)[..., None])
    raise ValueError(kind)


# ---------------------------------------------------------------- leaves


def outline(rng, margin, npts=240):
    """Leaf outline in leaf coordinates: u along the midrib from base (-1) to tip (+1), v across
    (half-width at most ~1). Returns arrays u, v of the polygon and the leaf's width ratio."""
    t = np.linspace(0, 2 * math.pi, npts, endpoint=False)
    u = -np.cos(t)                            # base at t=0, tip at t=pi
    side = np.sin(t)
    p = rng.uniform(0.6, 1.6)                 # where the leaf is widest
    width = rng.uniform(0.25, 0.75)
    pos = (u + 1) / 2                         # 0 base .. 1 tip
    prof = np.sin(np.pi * pos ** p) ** rng.uniform(0.6, 1.1)
    if margin == "cordate":                   # heart-shaped base
        prof = prof + 0.35 * np.exp(-((pos - 0.08) / 0.07) ** 2)
    if margin == "palmate":
        width = rng.uniform(0.8, 1.0)
        prof = np.sin(np.pi * pos) ** 0.5
    r = np.ones_like(t)
    if margin == "serrate":
        r *= 1 - rng.uniform(0.02, 0.08) * np.abs(np.sin(t * rng.integers(20, 60)))
    if margin == "lobed":
        r *= 1 - rng.uniform(0.12, 0.3) * np.abs(np.sin(t * rng.integers(3, 8)))
    if margin == "palmate":
        r *= 1 - rng.uniform(0.3, 0.5) * np.abs(np.sin(t * 5 / 2))
        r *= 1 - 0.04 * np.abs(np.sin(t * 40))
    v = side * width * prof * r
    u = u * (0.97 + 0.03 * r)
    return u, v, width


def leaf_colour(rng, dry=False):
    if dry:
        return hsv(rng.uniform(18, 48), rng.uniform(0.3, 0.75), rng.uniform(0.3, 0.8))
    return hsv(rng.uniform(70, 140), rng.uniform(0.35, 0.85), rng.uniform(0.22, 0.7))


def render_leaf(rng, n, label, frame, cx, cy, length, ang, margin):
    """Draws one leaf into frame (float RGB n x n x 3) in place; returns its mask (n x n, 0..1)."""
    u_o, v_o, width = outline(rng, margin)
    ca, sa = math.cos(ang), math.sin(ang)
    px = cx + length * (u_o * ca - v_o * sa)
    py = cy + length * (u_o * sa + v_o * ca)
    mp = Image.new("L", (n, n), 0)
    ImageDraw.Draw(mp).polygon(list(zip(px.tolist(), py.tolist())), fill=255)
    mask = np.asarray(mp, np.float32) / 255.0
    if mask.sum() < 4:
        return mask
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    dx, dy = (xx - cx) / length, (yy - cy) / length
    u = dx * ca + dy * sa                   # along the midrib, -1 base .. 1 tip
    v = -dx * sa + dy * ca                  # across

    dry = label == "dry"
    base = leaf_colour(rng, dry)
    tex = vnoise(rng, n, n, rng.integers(6, 20))[..., None]
    leaf = base * (0.85 + 0.3 * tex)
    # lighter or darker towards the tip or the margin
    leaf = leaf * (1 + rng.uniform(-0.15, 0.15) * u[..., None] + rng.uniform(-0.2, 0.1) * np.abs(v)[..., None] / max(width, 0.2))
    # venation: midrib, laterals, a reticulate network
    vein_col = np.array(base, np.float32) * rng.uniform(1.1, 1.5) + rng.uniform(0, 25)
    mid = np.exp(-(v / rng.uniform(0.008, 0.02)) ** 2) * (u > -1) * (u < 0.95)
    k = rng.uniform(4, 11)                  # lateral veins per half length
    slope = rng.uniform(0.5, 1.6)
    lat = np.cos((u - slope * np.abs(v)) * k * math.pi) ** 30 * (np.abs(v) > 0.01)
    net = np.abs(vnoise(rng, n, n, rng.integers(15, 40)) - 0.5) < 0.025
    vmix = np.clip(mid * 0.9 + lat * rng.uniform(0.2, 0.6) + net * rng.uniform(0.0, 0.2), 0, 1)[..., None]
    leaf = leaf * (1 - vmix) + vein_col * vmix

    lesion_share = 0.0
    if label == "leaf_spot":
        leaf = spots(rng, n, leaf, mask, length, base)
    elif label == "rust":
        leaf = rust(rng, n, leaf, mask, length)
    elif label == "blight":
        leaf, lesion_share = blight(rng, n, leaf, mask, u, v, width)
    elif label == "mosaic":
        m = vnoise(rng, n, n, rng.integers(4, 12))
        yel = np.clip((m - rng.uniform(0.35, 0.6)) * rng.uniform(3, 8), 0, 1)[..., None] * rng.uniform(0.5, 0.95)
        ycol = hsv(rng.uniform(50, 68), rng.uniform(0.45, 0.85), rng.uniform(0.55, 0.9))
        leaf = leaf * (1 - yel) + ycol * yel
    if label in ("leaf_spot", "rust", "blight", "mosaic") and rng.random() < 0.3:
        # chlorosis: the leaf yellows between the veins as the disease goes on
        chl = np.clip(vnoise(rng, n, n, 3) * rng.uniform(0.3, 0.8), 0, 1)[..., None] * (1 - vmix)
        leaf = leaf * (1 - chl) + hsv(rng.uniform(45, 60), rng.uniform(0.5, 0.8), rng.uniform(0.5, 0.85)) * chl
    if dry and rng.random() < 0.6:  # patches of a drier, paler brown
        p = np.clip((vnoise(rng, n, n, 6) - 0.5) * 4, 0, 1)[..., None]
        leaf = leaf * (1 - p) + hsv(rng.uniform(25, 45), rng.uniform(0.2, 0.5), rng.uniform(0.5, 0.85)) * p

    # light: the halves of a folded leaf face the light differently; gloss
    fold = 1 + rng.uniform(-0.25, 0.25) * np.sign(v)[..., None]
    leaf = leaf * fold
    if rng.random() < 0.6:
        gu, gv = rng.uniform(-0.6, 0.6), rng.uniform(-0.4, 0.4) * width
        s = rng.uniform(0.1, 0.4)
        gloss = np.exp(-((u - gu) ** 2 + ((v - gv) / max(width, 0.2)) ** 2) / (s * s))[..., None] * rng.uniform(0.15, 0.6)
        leaf = leaf * (1 - gloss) + 240 * gloss
    a = mask[..., None]
    frame *= 1 - a
    frame += leaf * a
    return mask


def spots(rng, n, leaf, mask, length, base):
    pil = Image.fromarray(np.clip(leaf, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(pil)
    ys, xs = np.nonzero(mask > 0.5)
    count = int(rng.integers(4, 30))
    scale = length * rng.uniform(0.02, 0.06)
    for _ in range(count):
        i = int(rng.integers(len(xs)))
        x, y, r = xs[i], ys[i], scale * rng.uniform(0.5, 1.5)
        halo = r * rng.uniform(1.3, 2.0)
        d.ellipse([x - halo, y - halo, x + halo, y + halo], fill=tuple(int(c) for c in hsv(rng.uniform(45, 62), rng.uniform(0.4, 0.8), rng.uniform(0.5, 0.85))))
        d.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in hsv(rng.uniform(15, 35), rng.uniform(0.4, 0.8), rng.uniform(0.15, 0.45))))
        if rng.random() < 0.4:
            d.ellipse([x - r * 0.4, y - r * 0.4, x + r * 0.4, y + r * 0.4], fill=tuple(int(c) for c in hsv(rng.uniform(20, 40), rng.uniform(0.1, 0.4), rng.uniform(0.5, 0.8))))
    out = np.asarray(pil.filter(ImageFilter.GaussianBlur(max(0.3, scale * 0.15))), np.float32)
    return out


def rust(rng, n, leaf, mask, length):
    pil = Image.fromarray(np.clip(leaf, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(pil)
    ys, xs = np.nonzero(mask > 0.5)
    for _ in range(int(rng.integers(1, 5))):  # clusters
        i = int(rng.integers(len(xs)))
        cx, cy = xs[i], ys[i]
        spread = length * rng.uniform(0.1, 0.5)
        for _ in range(int(rng.integers(15, 80))):
            x, y = cx + rng.normal(0, spread), cy + rng.normal(0, spread)
            if not (0 <= x < n and 0 <= y < n) or mask[int(y), int(x)] < 0.5:
                continue
            r = length * rng.uniform(0.006, 0.02) + 0.5
            col = hsv(rng.uniform(15, 35), rng.uniform(0.6, 0.95), rng.uniform(0.5, 0.9))
            if rng.random() < 0.2:
                h = r * 1.8
                d.ellipse([x - h, y - h, x + h, y + h], fill=tuple(int(c) for c in hsv(rng.uniform(48, 62), 0.6, 0.7)))
            d.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in col))
    return np.asarray(pil, np.float32)


def blight(rng, n, leaf, mask, u, v, width):
    """Large necrotic areas, from the margin or the tip inwards or as blotches, up to most of the
    leaf; brown to dark brown, often with a yellow margin and sometimes concentric rings."""
    field = np.full(u.shape, 9.0, np.float32)
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.5:  # from the margin or tip
            pu = rng.uniform(-0.8, 1.0)
            pv = math.copysign(width, rng.uniform(-1, 1)) * rng.uniform(0.6, 1.1)
        else:
            pu, pv = rng.uniform(-0.6, 0.7), rng.uniform(-0.6, 0.6) * width
        r = rng.uniform(0.12, 0.7)
        dist = np.sqrt((u - pu) ** 2 + ((v - pv) / max(width, 0.2) * 0.8) ** 2) / r
        field = np.minimum(field, dist)
    wobble = (vnoise(rng, u.shape[0], u.shape[1], rng.integers(6, 14)) - 0.5) * 0.5
    d = field + wobble
    core = np.clip((1 - d) * 6, 0, 1)[..., None]
    halo = np.clip((1.25 - d) * 6, 0, 1)[..., None] - core
    necro = hsv(rng.uniform(15, 38), rng.uniform(0.35, 0.8), rng.uniform(0.15, 0.5))
    nt = necro * (0.75 + 0.5 * vnoise(rng, u.shape[0], u.shape[1], 20)[..., None])
    if rng.random() < 0.4:  # target rings
        nt = nt * (0.85 + 0.2 * np.cos(d * rng.uniform(15, 30))[..., None])
    ycol = hsv(rng.uniform(45, 60), rng.uniform(0.5, 0.85), rng.uniform(0.5, 0.85))
    leaf = leaf * (1 - halo * rng.uniform(0.3, 0.9)) + ycol * halo * rng.uniform(0.3, 0.9)
    leaf = leaf * (1 - core) + nt * core
    share = float((core[..., 0] * mask).sum() / max(mask.sum(), 1))
    return leaf, share


def camera(rng, img, n, good=False):
    """Light and camera: dappled light, exposure, colour temperature partly corrected by white
    balance, vignetting, gamma, shot and read noise, defocus or motion blur, JPEG. good: a photo
    any quality gate should pass (moderate exposure, no blur)."""
    if rng.random() < 0.35:  # sun through leaves
        dap = np.clip((vnoise(rng, n, n, rng.integers(4, 10)) - 0.5) * 5, 0, 1)
        img = img * (rng.uniform(0.45, 0.8) + (1 - rng.uniform(0.45, 0.8)) * dap[..., None] + 0.2 * dap[..., None])
    k = float(np.exp(rng.uniform(math.log(2500), math.log(10000))))
    cast = (kelvin(k) / kelvin(6500)) ** rng.uniform(0.2, 0.9)  # white balance undoes part of it
    cast = cast / cast.mean() * rng.uniform(0.95, 1.05, 3)
    gx, gy = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n))
    vig = 1 - rng.uniform(0, 0.35) * (gx ** 2 + gy ** 2) / 2
    img = img * (rng.uniform(0.8, 1.15) if good else rng.uniform(0.55, 1.35)) * cast * vig[..., None]
    img = np.clip(img, 0, 255)
    shot = rng.uniform(0, 1.2)
    img = img + rng.normal(0, 1, img.shape) * (shot * np.sqrt(img + 1) + rng.uniform(0.5, 4))
    img = 255 * (np.clip(img, 0, 255) / 255) ** rng.uniform(0.8, 1.25)
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    r = 1.0 if good else rng.random()
    if r < 0.35:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5) * n / 160))
    elif r < 0.5:  # motion blur: a short line kernel
        ln = int(rng.integers(3, 8))
        kern = np.zeros((ln, ln), np.float32)
        a = rng.uniform(0, math.pi)
        for i in range(ln):
            t = i - (ln - 1) / 2
            kern[int(round((ln - 1) / 2 + t * math.sin(a))), int(round((ln - 1) / 2 + t * math.cos(a)))] = 1
        kern /= kern.sum()
        if ln in (3, 5):
            out = out.filter(ImageFilter.Kernel((ln, ln), kern.flatten().tolist(), 1))
        else:
            out = out.filter(ImageFilter.BoxBlur(1))
    if rng.random() < 0.7:
        buf = io.BytesIO()
        out.save(buf, "JPEG", quality=int(rng.integers(35, 95)))
        out = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return out


def photo(rng, n, label, backgrounds=BACKGROUNDS, margins=MARGINS, good=False):
    """A photograph of a leaf with condition label (one of healthy, leaf_spot, rust, blight, mosaic,
    dry) at n x n; good: well exposed and in focus (see camera)."""
    bgk = backgrounds[int(rng.integers(len(backgrounds)))]
    img = background(rng, n, bgk)
    img = np.asarray(img, np.float32).copy()
    margin = margins[int(rng.integers(len(margins)))]
    # the main leaf: from half the frame to much bigger than it (a close-up runs off the edges)
    length = n * float(np.exp(rng.uniform(math.log(0.28), math.log(0.95))))
    cx, cy = n / 2 + rng.uniform(-0.15, 0.15, 2) * n
    ang = rng.uniform(0, 2 * math.pi)
    others = int(rng.choice([0, 0, 1, 2, 3]))
    extra = []
    for _ in range(others):  # leaves behind the main one, same plant
        extra.append((rng.uniform(0, n), rng.uniform(0, n), length * rng.uniform(0.5, 0.9), rng.uniform(0, 2 * math.pi)))
    shadow_off = rng.uniform(-0.06, 0.06, 2) * n
    # cast shadow of the main leaf on the background
    if bgk not in ("foliage", "sky") and rng.random() < 0.7:
        tmp = np.zeros_like(img)
        m = render_leaf(np.random.default_rng(int(rng.integers(1 << 30))), n, "healthy", tmp,
                        cx + shadow_off[0], cy + shadow_off[1], length, ang, "entire")
        m = np.asarray(Image.fromarray((m * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(n / 40)), np.float32) / 255
        img = img * (1 - rng.uniform(0.3, 0.6) * m[..., None])
    for ex, ey, el, ea in extra:
        lab = label if rng.random() < 0.5 else ("healthy" if label != "dry" else "dry")
        render_leaf(rng, n, lab, img, ex, ey, el, ea, margin)
    render_leaf(rng, n, label, img, cx, cy, length, ang, margin)
    return camera(rng, img, n, good), {"background": bgk, "margin": margin}


def forced_light(rng, img, kelvin_k):
    """Re-lights a finished render with a strong cast (warm or cold), as a camera without white
    balance would record it: the photographic test set's light variants."""
    a = np.asarray(img, np.float32) * (kelvin(kelvin_k) / kelvin(6500))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def scene(rng, n, kind):
    """A photograph with no leaf in it: ground, a hand, a table, a wall, the sky (not_a_leaf)."""
    return camera(rng, np.asarray(background(rng, n, kind), np.float32).copy(), n)
