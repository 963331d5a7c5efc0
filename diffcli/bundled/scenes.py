"""Procedural scenes: attribute lists, a PIL renderer, a caption grammar and a prompt parser.

A scene is one object (castle, house, ...) of some colour, at some horizontal position,
standing on some ground under a sky for some time of day. Everything is drawn with
coordinates relative to the image size, supersampled and downsampled for anti-aliasing.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

from diffcli.bundled.words import (  # noqa: F401 - the scene vocabulary, re-exported
    ATTRIBUTES,
    COLORS,
    GROUNDS,
    OBJECTS,
    POSITIONS,
    PUNCTUATION,
    STOP_WORDS,
    SYNONYMS,
    TIMES,
    VALUES,
    WORD_TO_ATTR,
    parse_prompt,
)

_T = {  # time phrases
    "dawn": ["at dawn", "at sunrise", "at daybreak", "in the morning", "dawn", "sunrise", "morning"],
    "day": [
        "during the day",
        "in the daytime",
        "at noon",
        "at midday",
        "in the afternoon",
        "by day",
        "day",
        "daytime",
        "noon",
        "on a sunny day",
        "in daylight",
    ],
    "dusk": [
        "at dusk",
        "at sunset",
        "in the evening",
        "at twilight",
        "at sundown",
        "dusk",
        "sunset",
        "evening",
        "twilight",
    ],
    "night": [
        "at night",
        "at midnight",
        "by night",
        "under a starry sky",
        "in the nighttime",
        "night",
        "midnight",
        "on a moonlit night",
        "nighttime",
    ],
}
_G = {  # ground phrases
    "grass": [
        "on grass",
        "on the grass",
        "grassy ground",
        "on a meadow",
        "in a field",
        "on a lawn",
        "grass",
        "meadow",
        "grassy",
    ],
    "sand": [
        "on sand",
        "on the sand",
        "sandy ground",
        "in the desert",
        "on a beach",
        "on the dunes",
        "sand",
        "desert",
        "beach",
        "sandy",
    ],
    "snow": [
        "on snow",
        "in the snow",
        "snowy ground",
        "snow covered ground",
        "in winter",
        "on ice",
        "snow",
        "snowy",
        "winter",
    ],
    "sea": [
        "by the sea",
        "on the water",
        "in the ocean",
        "on a lake",
        "over the waves",
        "sea",
        "water",
        "ocean",
        "on the sea",
    ],
}
_P = {
    "left": ["on the left", "to the left", "on the left side", "at the left", "left", "left side"],
    "center": ["in the center", "in the middle", "centered", "in the centre", "center", "middle"],
    "right": ["on the right", "to the right", "on the right side", "at the right", "right", "right side"],
}
_O = {
    "castle": ["castle", "fortress"],
    "house": ["house", "cottage", "cabin", "hut"],
    "tree": ["tree", "oak"],
    "lighthouse": ["lighthouse"],
    "mountain": ["mountain", "peak", "hill"],
}
_C = {c: [c] for c in COLORS} | {
    "red": ["red", "crimson"],
    "purple": ["purple", "violet"],
    "yellow": ["yellow", "golden"],
}
_GROUND_ADJ = {"grass": ["grassy"], "sand": ["sandy"], "snow": ["snowy"], "sea": []}
_TIME_ADJ = {"day": ["sunny"], "night": ["starry", "moonlit"], "dawn": [], "dusk": []}


@dataclass
class Scene:
    """A scene description plus the small random variation used to draw it."""

    time: str = "day"
    ground: str = "grass"
    obj: str = "castle"
    color: str = "red"
    position: str = "center"
    scale: float = 1.0  # object size factor
    dx: float = 0.0  # horizontal jitter (fraction of width)
    dy: float = 0.0  # vertical jitter of the object base (fraction of height)
    horizon: float = 0.64  # horizon height (fraction of height from the top)
    seed: int = 0  # seeds star/sun/wave details

    def attrs(self) -> dict[str, str]:
        return {a: getattr(self, a) for a in ATTRIBUTES}

    def to_dict(self) -> dict:
        return asdict(self)


def _as_rng(rng) -> random.Random:
    if isinstance(rng, random.Random):
        return rng
    if isinstance(rng, np.random.Generator):
        return random.Random(int(rng.integers(2**63)))
    return random.Random(rng)


def sample_scene(rng=None, **fixed) -> Scene:
    """Sample a random scene; keyword arguments (time=..., obj=...) fix attributes."""
    rng = _as_rng(rng)
    for k, v in fixed.items():
        if k in VALUES and v not in VALUES[k]:
            raise ValueError(f"unknown {k}: {v!r}")
    vals = {a: rng.choice(VALUES[a]) for a in ATTRIBUTES}
    var = dict(
        scale=rng.uniform(0.85, 1.15),
        dx=rng.uniform(-0.035, 0.035),
        dy=rng.uniform(-0.03, 0.03),
        horizon=rng.uniform(0.6, 0.68),
        seed=rng.randrange(2**31),
    )
    kw = vals | var | {k: v for k, v in fixed.items() if v is not None}
    return Scene(**kw)


# ---------------------------------------------------------------- rendering
_SKY = {  # (top, horizon) colours
    "dawn": ((118, 150, 212), (252, 196, 168)),
    "day": ((58, 128, 222), (172, 212, 246)),
    "dusk": ((52, 30, 92), (242, 112, 52)),
    "night": ((6, 9, 32), (28, 38, 84)),
}
_SUN = {"dawn": (255, 232, 160), "day": (255, 250, 205), "dusk": (255, 118, 62)}
_GROUND_RGB = {"grass": (72, 152, 62), "sand": (222, 196, 132), "snow": (236, 241, 250), "sea": (32, 92, 172)}
_GROUND_LIGHT = {"dawn": 0.85, "day": 1.0, "dusk": 0.72, "night": 0.42}
_OBJ_LIGHT = {"dawn": 0.96, "day": 1.0, "dusk": 0.92, "night": 0.8}
COLOR_RGB = {
    "red": (212, 38, 38),
    "blue": (38, 72, 214),
    "green": (36, 164, 58),
    "yellow": (242, 212, 36),
    "white": (244, 244, 244),
    "black": (28, 28, 28),
    "purple": (132, 48, 172),
    "orange": (246, 140, 28),
}
_POS_X = {"left": 0.26, "center": 0.5, "right": 0.74}


def _mul(c, f):
    return tuple(int(max(0, min(255, round(x * f)))) for x in c)


def _mix(a, b, t):
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def _outline(c):
    return (90, 90, 90) if sum(c) < 120 else _mul(c, 0.45)


def render(scene: Scene, size: int | tuple[int, int] = 64, supersample: int | None = None) -> Image.Image:
    """Draw ``scene`` as an RGB image of ``size`` (int or (width, height))."""
    w, h = (size, size) if isinstance(size, int) else size
    ss = supersample or max(1, min(4, 1024 // max(w, h)))
    W, H = w * ss, h * ss
    rng = random.Random(scene.seed)
    hy = scene.horizon * H

    # sky gradient (numpy), ground filled later
    top, bot = _SKY[scene.time]
    t = np.clip(np.arange(H, dtype=np.float32) / max(hy, 1.0), 0, 1)[:, None]
    sky = np.array(top, np.float32) * (1 - t) + np.array(bot, np.float32) * t
    arr = np.repeat(sky[:, None, :], W, axis=1)
    img = Image.fromarray(np.ascontiguousarray(arr.astype(np.uint8)), "RGB")
    d = ImageDraw.Draw(img)
    S = min(W, H)

    # sun / moon / stars
    if scene.time == "night":
        for _ in range(rng.randint(18, 30)):
            x, y = rng.uniform(0, W), rng.uniform(0, hy * 0.92)
            r = S * rng.uniform(0.004, 0.009)
            d.ellipse([x - r, y - r, x + r, y + r], fill=_mix((255, 255, 235), top, rng.uniform(0, 0.35)))
        mx, my, mr = W * rng.uniform(0.12, 0.88), H * rng.uniform(0.1, 0.24), S * 0.065
        d.ellipse([mx - mr, my - mr, mx + mr, my + mr], fill=(236, 236, 212))
        ox = mr * 0.55
        d.ellipse(
            [mx - mr + ox, my - mr - ox * 0.4, mx + mr + ox, my + mr - ox * 0.4],
            fill=tuple(int(v) for v in sky[int(my)]),
        )
    else:
        if scene.time == "day":
            sx, sy, sr = W * rng.uniform(0.12, 0.88), H * rng.uniform(0.1, 0.22), S * 0.07
        elif scene.time == "dawn":
            sx, sy, sr = W * rng.uniform(0.1, 0.4), hy - S * rng.uniform(0.06, 0.12), S * 0.085
        else:
            sx, sy, sr = W * rng.uniform(0.6, 0.9), hy - S * rng.uniform(0.03, 0.08), S * 0.095
        d.ellipse([sx - sr, sy - sr, sx + sr, sy + sr], fill=_SUN[scene.time])

    # ground
    g = _mul(_GROUND_RGB[scene.ground], _GROUND_LIGHT[scene.time])
    g2 = _mul(g, 0.82)
    n = 12
    for i in range(n):  # subtle vertical gradient: lighter at horizon
        y0 = hy + (H - hy) * i / n
        y1 = hy + (H - hy) * (i + 1) / n + 1
        d.rectangle([0, y0, W, y1], fill=_mix(_mul(g, 1.08), g2, i / (n - 1)))
    if scene.ground == "sea":
        wc = _mul(g, 1.35)
        for _ in range(rng.randint(8, 14)):
            x, y = rng.uniform(0, W), rng.uniform(hy + S * 0.03, H)
            L = S * rng.uniform(0.05, 0.12)
            d.line([x, y, x + L, y], fill=wc, width=max(1, int(S * 0.008)))
    elif scene.ground == "grass":
        for _ in range(rng.randint(10, 18)):
            x, y = rng.uniform(0, W), rng.uniform(hy + S * 0.03, H)
            d.line([x, y, x + S * 0.01, y - S * 0.025], fill=_mul(g, 0.75), width=max(1, int(S * 0.006)))

    # object
    col = _mul(COLOR_RGB[scene.color], _OBJ_LIGHT[scene.time])
    cx = W * (_POS_X[scene.position] + scene.dx)
    u = S * 0.0135 * scene.scale
    base = hy + S * (0.16 + scene.dy)
    _OBJ_DRAW[scene.obj](d, cx, base, u, col, scene.time, hy, S)

    if ss > 1:
        img = img.resize((w, h), Image.LANCZOS)
    return img


def _castle(d, cx, base, u, col, time, hy, S):
    ol, lw = _outline(col), max(1, int(u * 0.35))
    bw, bh = 15 * u, 20 * u
    d.rectangle([cx - bw, base - bh, cx + bw, base], fill=col, outline=ol, width=lw)
    for sgn in (-1, 1):  # towers
        tx = cx + sgn * bw
        d.rectangle([tx - 4.5 * u, base - 30 * u, tx + 4.5 * u, base], fill=col, outline=ol, width=lw)
        d.polygon(
            [(tx - 5.5 * u, base - 30 * u), (tx + 5.5 * u, base - 30 * u), (tx, base - 38 * u)],
            fill=_mul(col, 0.7),
            outline=ol,
        )
    for i in range(5):  # crenellations
        x = cx - bw + 4.5 * u + i * (2 * bw - 9 * u) / 4
        d.rectangle([x - 1.5 * u, base - bh - 3 * u, x + 1.5 * u, base - bh], fill=col, outline=ol, width=lw)
    d.rectangle([cx - 4 * u, base - 11 * u, cx + 4 * u, base], fill=(40, 28, 20))
    d.ellipse([cx - 4 * u, base - 15 * u, cx + 4 * u, base - 7 * u], fill=(40, 28, 20))


def _house(d, cx, base, u, col, time, hy, S):
    ol, lw = _outline(col), max(1, int(u * 0.35))
    bw, bh = 13 * u, 17 * u
    d.rectangle([cx - bw, base - bh, cx + bw, base], fill=col, outline=ol, width=lw)
    d.polygon(
        [(cx - bw - 3 * u, base - bh), (cx + bw + 3 * u, base - bh), (cx, base - bh - 14 * u)],
        fill=_mul(col, 0.62) if sum(col) > 120 else (96, 40, 30),
        outline=ol,
    )
    d.rectangle([cx - 3 * u, base - 10 * u, cx + 3 * u, base], fill=(70, 42, 24))
    win = (255, 226, 120) if time in ("night", "dusk") else (170, 210, 240)
    for sx in (-1, 1):
        x = cx + sx * 8 * u
        d.rectangle([x - 2.5 * u, base - 13 * u, x + 2.5 * u, base - 8 * u], fill=win, outline=ol)


def _tree(d, cx, base, u, col, time, hy, S):
    ol = _outline(col)
    d.rectangle([cx - 2.5 * u, base - 14 * u, cx + 2.5 * u, base], fill=(100, 64, 34))
    for ox, oy, r in ((0, -27, 11), (-7, -20, 8.5), (7, -20, 8.5)):
        x, y, r = cx + ox * u, base + oy * u, r * u
        d.ellipse([x - r, y - r, x + r, y + r], fill=col, outline=ol, width=max(1, int(u * 0.35)))
    x, y, r = cx, base - 22 * u, 7 * u
    d.ellipse([x - r, y - r, x + r, y + r], fill=col)


def _lighthouse(d, cx, base, u, col, time, hy, S):
    ol, lw = _outline(col), max(1, int(u * 0.35))
    H, bw, tw = 34 * u, 6.5 * u, 4 * u
    d.polygon([(cx - bw, base), (cx + bw, base), (cx + tw, base - H), (cx - tw, base - H)], fill=col, outline=ol)
    band = (236, 236, 236) if sum(col) < 600 else (200, 40, 40)
    for k in (0.25, 0.62):
        y0, y1 = base - H * k, base - H * (k + 0.13)
        w0, w1 = bw + (tw - bw) * k, bw + (tw - bw) * (k + 0.13)
        d.polygon([(cx - w0, y0), (cx + w0, y0), (cx + w1, y1), (cx - w1, y1)], fill=band)
    lamp = (255, 236, 120) if time in ("night", "dusk") else (250, 246, 210)
    d.rectangle([cx - 3.5 * u, base - H - 6 * u, cx + 3.5 * u, base - H], fill=lamp, outline=ol, width=lw)
    d.polygon(
        [(cx - 5 * u, base - H - 6 * u), (cx + 5 * u, base - H - 6 * u), (cx, base - H - 11 * u)],
        fill=_mul(col, 0.6) if sum(col) > 120 else (80, 80, 80),
    )
    if time == "night":
        d.polygon(
            [(cx, base - H - 3 * u), (cx + 16 * u, base - H - 7 * u), (cx + 16 * u, base - H + 1 * u)],
            fill=(250, 236, 150),
        )


def _mountain(d, cx, base, u, col, time, hy, S):
    ol = _outline(col)
    base = base - 4 * u
    w, H = 20 * u, 34 * u
    d.polygon([(cx - w, base), (cx + w, base), (cx, base - H)], fill=col, outline=ol)
    d.polygon([(cx, base - H), (cx + w, base), (cx + w * 0.35, base)], fill=_mul(col, 0.78))
    cap = (250, 250, 255) if sum(col) < 600 else (170, 180, 200)
    k = 0.3
    d.polygon(
        [
            (cx, base - H),
            (cx + w * k, base - H * (1 - k)),
            (cx + w * k * 0.3, base - H * (1 - k) + 2 * u),
            (cx - w * k * 0.2, base - H * (1 - k) - 1 * u),
            (cx - w * k, base - H * (1 - k)),
        ],
        fill=cap,
    )


_OBJ_DRAW = {"castle": _castle, "house": _house, "tree": _tree, "lighthouse": _lighthouse, "mountain": _mountain}


def object_mask(scene: Scene, size: int | tuple[int, int] = 64, supersample: int | None = None) -> np.ndarray:
    """The object's silhouette in ``render(scene, size)`` as float32 coverage in [0, 1], shape (h, w).

    Drawn with exactly the geometry ``render`` uses (same supersampling, box-filtered down), so the
    coverage of a pixel is the fraction of it the object covers. The lighthouse's night beam is light
    in the sky, not the object: it is left out, and the silhouette does not depend on the time of day.
    """
    w, h = (size, size) if isinstance(size, int) else size
    ss = supersample or max(1, min(4, 1024 // max(w, h)))
    W, H = w * ss, h * ss
    img = Image.new("RGB", (W, H), (0, 0, 0))
    S, hy = min(W, H), scene.horizon * H
    cx = W * (_POS_X[scene.position] + scene.dx)
    u = S * 0.0135 * scene.scale
    base = hy + S * (0.16 + scene.dy)
    _OBJ_DRAW[scene.obj](ImageDraw.Draw(img), cx, base, u, (255, 255, 255), "day", hy, S)
    m = Image.fromarray(((np.asarray(img).max(axis=2) > 0) * 255).astype(np.uint8), "L")
    if ss > 1:
        m = m.resize((w, h), Image.BOX)
    return np.asarray(m, np.float32) / 255.0


def control_map(scene: Scene, size: int | tuple[int, int] = 64) -> Image.Image:
    """The segmentation control image of ``scene``: the object's silhouette, white on black (RGB)."""
    m = (np.clip(object_mask(scene, size), 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(np.repeat(m[:, :, None], 3, axis=2), "RGB")


# ---------------------------------------------------------------- captions
def caption(scene: Scene | dict, rng=None, drop_prob: float = 0.25) -> str:
    """A random phrasing of ``scene``; each attribute is omitted with probability ``drop_prob``.

    Colour is only stated together with the object. Attributes missing from a dict are omitted.
    """
    rng = _as_rng(rng)
    a = scene.attrs() if isinstance(scene, Scene) else dict(scene)
    keep = {k: (k in a and a[k] is not None and rng.random() >= drop_prob) for k in ATTRIBUTES}
    if not keep["obj"]:
        keep["color"] = False
    style = rng.random()
    if style < 0.2:  # terse: "night. lighthouse. sea."
        parts = []
        if keep["obj"]:
            parts.append(((rng.choice(_C[a["color"]]) + " ") if keep["color"] else "") + rng.choice(_O[a["obj"]]))
        if keep["time"]:
            parts.append(rng.choice([p for p in _T[a["time"]] if " " not in p]))
        if keep["ground"]:
            parts.append(rng.choice([p for p in _G[a["ground"]] if " " not in p]))
        if keep["position"]:
            parts.append(rng.choice([p for p in _P[a["position"]] if " " not in p]))
        rng.shuffle(parts)
        sep = rng.choice([". ", ", ", " "])
        return sep.join(parts) + ("." if sep != " " and rng.random() < 0.5 else "")
    obj = ""
    if keep["obj"]:
        obj = ((rng.choice(_C[a["color"]]) + " ") if keep["color"] else "") + rng.choice(_O[a["obj"]])
        art = "an" if obj[0] in "aeiou" else "a"
        obj = rng.choice([f"{art} {obj}", f"the {obj}", obj, f"{art} {obj}"])
    segs = []
    if keep["position"]:
        segs.append(rng.choice(_P[a["position"]]) if obj else rng.choice(_P[a["position"]][:4]))
    if keep["ground"]:
        segs.append(rng.choice(_G[a["ground"]]))
    if keep["time"]:
        segs.append(rng.choice(_T[a["time"]]))
    if style < 0.35 and obj and keep["time"] and keep["ground"] and _GROUND_ADJ[a["ground"]]:
        # "snowy field at night with a red house on the left"
        lead = rng.choice(_GROUND_ADJ[a["ground"]]) + " " + rng.choice(["field", "ground", "landscape", "scene"])
        tail = rng.choice([p for p in _T[a["time"]] if " " in p])
        pos = (" " + rng.choice(_P[a["position"]][:4])) if keep["position"] else ""
        return f"{lead} {tail} with {obj}{pos}"
    rng.shuffle(segs)
    if obj and rng.random() < 0.8:
        segs.insert(0, obj)
    elif obj:
        segs.append(obj)
    sep = rng.choice([" ", ", ", ", "])
    text = sep.join(segs)
    if rng.random() < 0.15 and text:
        text += "."
    return text


def random_spec(rng=None, drop_prob: float = 0.0) -> dict[str, str]:
    """A random dict of stated attributes (each omitted with ``drop_prob``)."""
    rng = _as_rng(rng)
    spec = {a: rng.choice(VALUES[a]) for a in ATTRIBUTES if rng.random() >= drop_prob}
    if "obj" not in spec:
        spec.pop("color", None)
    return spec
