"""Procedural toy street scenes: a semantic layout and a matching "photograph", for the CRN.

Each scene is a one-point-perspective street: sky (gradient, clouds), a road with lane
markings converging to a vanishing point, sidewalks, building facades with windows on both
sides (a stepped skyline shrinking with depth), trees along the sidewalks, and cars scaled by
their distance. Lighting varies per scene (sun side, brightness, colour temperature,
overcast skies) and every surface has its own texture and colour drawn at random -- so one
layout has many plausible images, which is what the CRN's diversity loss is for.

Class ids and colours follow Cityscapes' colours (`STREET_PALETTE`). Everything is a pure
function of the numpy Generator it is given.
"""

from __future__ import annotations

import numpy as np

from counterfeit.data.layouts import LayoutPairs, Palette

SKY, ROAD, SIDEWALK, BUILDING, VEGETATION, CAR = range(6)
STREET_PALETTE = Palette(
    ("sky", "road", "sidewalk", "building", "vegetation", "car"),
    np.array([[70, 130, 180], [128, 64, 128], [244, 35, 232], [70, 70, 70], [107, 142, 35], [0, 0, 142]], dtype=np.uint8),
)
_FACADES = np.array([[0.80, 0.72, 0.58], [0.62, 0.32, 0.25], [0.55, 0.55, 0.57], [0.88, 0.86, 0.80],
                     [0.75, 0.60, 0.35], [0.45, 0.42, 0.40], [0.70, 0.75, 0.78]], dtype=np.float32)
_CARS = np.array([[0.75, 0.08, 0.06], [0.08, 0.15, 0.55], [0.85, 0.85, 0.85], [0.08, 0.08, 0.09],
                  [0.55, 0.56, 0.58], [0.85, 0.70, 0.10], [0.10, 0.40, 0.20]], dtype=np.float32)


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Value noise in about [-1, 1]: a random (cells+1)-square lattice, bilinearly interpolated to height x width."""
    ch, cw = max(1, cells), max(1, int(round(cells * width / max(height, 1))))
    lattice = rng.uniform(-1.0, 1.0, (ch + 1, cw + 1)).astype(np.float32)
    y = np.linspace(0, ch, height, dtype=np.float32)
    x = np.linspace(0, cw, width, dtype=np.float32)
    y0 = np.minimum(y.astype(np.int64), ch - 1)
    x0 = np.minimum(x.astype(np.int64), cw - 1)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    a = lattice[y0][:, x0]
    b = lattice[y0][:, x0 + 1]
    c = lattice[y0 + 1][:, x0]
    d = lattice[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def render_street_scene(rng: np.random.Generator, height: int = 64, width: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (labels (H, W) uint8 with ids from STREET_PALETTE, image (3, H, W) float32 in [-1, 1])."""
    H, W = height, width
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    labels = np.full((H, W), SKY, dtype=np.uint8)
    img = np.zeros((H, W, 3), dtype=np.float32)

    # Camera and light.
    horizon = H * rng.uniform(0.36, 0.5)
    vx = W * rng.uniform(0.38, 0.62)
    sun_left = rng.random() < 0.5
    overcast = rng.random() < 0.25
    brightness = rng.uniform(0.75, 1.15)
    tint = np.array([1.0 + rng.uniform(-0.08, 0.12), 1.0, 1.0 - rng.uniform(-0.08, 0.12)], dtype=np.float32)
    depth = np.clip((yy - horizon) / (H - horizon), 0.0, 1.0)  # 0 at the horizon, 1 at the bottom row

    def line_x(bottom_x: float) -> np.ndarray:
        """Column of a ground line through the vanishing point that meets the bottom row at bottom_x."""
        return vx + (bottom_x - vx) * depth

    # Sky: vertical gradient, clouds.
    t = (yy / max(horizon, 1.0))[..., None]
    if overcast:
        top, low = np.array([0.62, 0.64, 0.68]), np.array([0.80, 0.81, 0.83])
    else:
        top, low = np.array([0.22, 0.42, 0.78]), np.array([0.70, 0.80, 0.92])
    img[:] = top * (1 - t) + low * t
    clouds = np.clip(smooth_noise(rng, H, W, 4) + 0.5 * smooth_noise(rng, H, W, 9), 0, None)[..., None]
    img += (0.35 if overcast else 0.5) * clouds * (np.array([0.95, 0.95, 0.97]) - img)

    ground = yy >= horizon
    # Road and sidewalks: wedges through the vanishing point.
    road_l, road_r = W * rng.uniform(-0.25, 0.2), W * rng.uniform(0.8, 1.25)
    walk = W * rng.uniform(0.25, 0.45)
    road = ground & (xx >= line_x(road_l)) & (xx <= line_x(road_r))
    walk_l, walk_r = line_x(road_l - walk), line_x(road_r + walk)
    sidewalk = ground & ~road & (xx >= walk_l) & (xx <= walk_r)
    grass = ground & ~road & ~sidewalk  # verges beyond the sidewalks (mostly hidden by facades)
    labels[grass] = VEGETATION
    img[grass] = _foliage(rng, H, W)[grass]
    labels[sidewalk] = SIDEWALK
    tile = ((np.abs(np.sin(xx * 0.9 / (0.2 + depth))) < 0.12) | (np.abs(np.sin(yy * 1.3 / (0.15 + depth))) < 0.1))
    walk_col = np.array([0.72, 0.68, 0.66]) * rng.uniform(0.85, 1.1)
    img[sidewalk] = walk_col * (1 - 0.18 * tile[sidewalk, None]) + 0.04 * rng.standard_normal((int(sidewalk.sum()), 1))
    labels[road] = ROAD
    asphalt = rng.uniform(0.25, 0.42)
    grain = 0.05 * smooth_noise(rng, H, W, 16) + 0.03 * rng.standard_normal((H, W))
    img[road] = (asphalt + grain[road])[:, None] * np.array([1.0, 1.0, 1.03])
    # Dashed centre line, dashes shrinking with distance.
    centre = line_x((road_l + road_r) / 2)
    dash = (np.abs(xx - centre) < 0.3 + 1.2 * depth) & (np.mod(3.0 / (depth + 0.05), 1.0) < 0.5) & road
    img[dash] = 0.9

    # Facades on both sides: segments along the depth, each its own height, colour and windows.
    for side in (-1, 1):
        outer = walk_l if side < 0 else walk_r
        dist = np.maximum((vx - xx) * -side, 0.0)  # columns away from the vanishing point on this side
        lit = (side < 0) == sun_left
        shade = 1.0 if lit or overcast else 0.62
        edge = float(vx if side < 0 else W - vx)
        d_far = edge + W * 0.1
        while d_far > 1.5:
            d_near = d_far * rng.uniform(0.55, 0.8)
            seg = (dist > d_near) & (dist <= d_far)
            d_far = d_near
            if rng.random() < 0.12:
                continue  # a gap: sky shows through
            rise = rng.uniform(0.25, 1.1) * (horizon / max(edge, 1.0)) * 1.4
            top = horizon - rise * dist
            region = seg & (yy >= top) & ((~ground) | ((xx - outer) * side > 0))
            if rng.random() < 0.15:  # a park instead of a building: low, bumpy, green
                bumps = top + 0.5 * rise * dist * (0.6 + 0.4 * smooth_noise(rng, H, W, 6))
                region &= yy >= bumps
                labels[region] = VEGETATION
                img[region] = _foliage(rng, H, W)[region] * shade
                continue
            labels[region] = BUILDING
            colour = _FACADES[rng.integers(len(_FACADES))] * rng.uniform(0.85, 1.1)
            texture = 1.0 + 0.06 * smooth_noise(rng, H, W, 12)[..., None] + 0.02 * rng.standard_normal((H, W, 1))
            facade = colour * texture * shade
            # Windows: a grid in perspective (their size grows with the distance from the vanishing point).
            scale = 0.05 + dist / max(edge, 1.0)
            u = np.mod((dist / scale) / rng.uniform(4.0, 7.0), 1.0)
            v = np.mod(((yy - horizon) / scale) / rng.uniform(5.0, 8.0), 1.0)
            windows = (u > 0.3) & (u < 0.75) & (v > 0.35) & (v < 0.8) & (yy < horizon + 0.2 * (H - horizon))
            glass = np.array([0.18, 0.22, 0.3]) + 0.25 * (1 - t) * (0.0 if overcast else 1.0) * np.array([0.3, 0.4, 0.6])
            facade = np.where(windows[..., None], glass * shade, facade)
            img[region] = facade[region]

    # Trees on the sidewalks' outer edges.
    for _ in range(rng.integers(0, 7)):
        side = -1 if rng.random() < 0.5 else 1
        d = rng.uniform(0.05, 1.0) ** 1.5
        row = horizon + d * (H - horizon)
        col = vx + ((road_l - walk * 0.8 if side < 0 else road_r + walk * 0.8) - vx) * d
        radius = 1.0 + 0.22 * H * d
        trunk = 0.9 * radius
        cy = row - trunk - radius
        crown = ((xx - col) ** 2 + ((yy - cy) * 1.15) ** 2) < radius**2 * (1 + 0.25 * smooth_noise(rng, H, W, 8))
        stem = (np.abs(xx - col) < max(0.5, 0.12 * radius)) & (yy > cy) & (yy <= row)
        labels[crown | stem] = VEGETATION
        leaf = _foliage(rng, H, W)
        light = 1.0 + 0.25 * np.clip(((xx - col) * (-1 if sun_left else 1) - (yy - cy)) / (radius + 1e-3), -1, 1)[..., None]
        img[crown] = (leaf * (1.0 if overcast else light))[crown]
        img[stem & ~crown] = np.array([0.3, 0.22, 0.15])

    # Cars on the road, far ones first so near ones occlude them.
    rows = np.sort(horizon + (H - horizon) * rng.uniform(0.12, 1.05, rng.integers(0, 5)))
    for row in rows:
        d = (row - horizon) / (H - horizon)
        car_w = 0.75 * H * d + 2
        car_h = 0.45 * car_w
        lo, hi = vx + (road_l - vx) * d, vx + (road_r - vx) * d
        if hi - lo < car_w:
            continue
        cx = rng.uniform(lo + car_w / 2, hi - car_w / 2)
        # Shadow on the road.
        shadow = (np.abs(xx - cx) < car_w * 0.55) & (np.abs(yy - row) < 0.06 * car_h + 0.5) & (labels == ROAD)
        img[shadow] *= 0.45
        waist = row - 0.55 * car_h
        body = (np.abs(xx - cx) < car_w / 2) & (yy <= row - 0.1 * car_h) & (yy > waist)
        cabin_w = car_w / 2 * rng.uniform(0.62, 0.8)
        cabin = (np.abs(xx - cx) < cabin_w - (waist - yy).clip(0) * 0.6) & (yy <= waist) & (yy > row - car_h)
        roof = cabin & (yy <= row - 0.88 * car_h)
        pillar = cabin & (np.abs(np.abs(xx - cx) - (cabin_w - (waist - yy).clip(0) * 0.6)) < 0.06 * car_w + 0.3)
        wheels = (np.abs(np.abs(xx - cx) - car_w * 0.32) < car_w * 0.11) & (yy > row - 0.22 * car_h) & (yy <= row)
        car = body | cabin | wheels
        labels[car] = CAR
        paint = _CARS[rng.integers(len(_CARS))] * rng.uniform(0.85, 1.1)
        gloss = 1.0 + 0.35 * np.exp(-(((yy - (waist + 0.05 * car_h)) / (0.06 * car_h + 0.5)) ** 2))[..., None]
        img[body] = (paint * gloss * (0.8 + 0.2 * (1 - depth[..., None])))[body]
        glass = np.array([0.2, 0.24, 0.3]) + (0.0 if overcast else 0.25) * np.array([0.3, 0.4, 0.6])
        img[cabin] = glass
        img[roof | pillar] = paint * 0.9
        img[wheels & ~body] = 0.05
        img[wheels & body] *= 0.35

    img = img * brightness * tint + 0.012 * rng.standard_normal((H, W, 3))
    image = np.clip(img, 0.0, 1.0).transpose(2, 0, 1) * 2.0 - 1.0
    return labels, np.ascontiguousarray(image, dtype=np.float32)


def _foliage(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    base = np.array([0.22, 0.42, 0.12]) * rng.uniform(0.75, 1.2) + np.array([0.05, 0.0, 0.0]) * rng.uniform(-1, 1)
    tex = 1.0 + 0.25 * smooth_noise(rng, height, width, 14)[..., None] + 0.08 * rng.standard_normal((height, width, 1))
    return (base * tex).astype(np.float32)


def make_street_scenes(n: int, height: int = 64, width: int = 128, seed: int = 0) -> LayoutPairs:
    """`n` scenes, scene i drawn from its own generator (seed, i): the set grows without changing."""
    labels, images = [], []
    for i in range(n):
        lab, img = render_street_scene(np.random.default_rng([seed, i]), height, width)
        labels.append(lab)
        images.append(img)
    names = [f"street-{seed}-{i:05d}" for i in range(n)]
    return LayoutPairs(np.stack(labels), np.stack(images), names, groups=list(names))


__all__ = ["STREET_PALETTE", "make_street_scenes", "render_street_scene", "smooth_noise"]
