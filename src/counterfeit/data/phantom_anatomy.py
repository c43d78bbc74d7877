"""Procedural head anatomy for the phantom: a tissue label map from head coordinates.

The head is built in its own coordinates (mm, origin at the head's centre, x to the patient's
left, y posterior, z superior, as in DICOM LPS). Layers follow the radial depth below a
perturbed egg-shaped skin surface: skin, fat, galea and temporal muscle, skull (outer table,
diploë, inner table), CSF, then a folded cortex over white matter with ventricles, deep grey
nuclei and a midline fissure.
Air sinuses sit inside a locally thickened frontal bone and mastoid air cells behind the ears.
Everything is an analytic function of the head coordinates, so the same subject can be
rendered under any transform (the MR pose, a slightly misaligned CT pose) with identical anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Tissue labels (see counterfeit.data.phantom.TISSUES for names and contrasts).
AIR, SCALP, FAT, CORTICAL_BONE, DIPLOE, CSF, GREY_MATTER, WHITE_MATTER, SINUS = range(9)

REF_AXES = np.array([70.0, 88.0, 94.0], dtype=np.float32)  # mean head semi-axes (mm): left-right, front-back, up-down


class FourierField:
    """A smooth random scalar field (about N(0, 1) per point) of length scale `length_mm`.

    Random Fourier features: sum of cosines with Gaussian-distributed wave vectors, which
    samples a Gaussian process with a squared-exponential kernel; cheap to evaluate at any
    point, so textures stay attached to the anatomy whatever the pose.
    """

    def __init__(self, rng: np.random.Generator, length_mm: float, n_waves: int = 12) -> None:
        self.omega = (rng.standard_normal((n_waves, 3)) / length_mm).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, n_waves).astype(np.float32)
        self.scale = np.float32(np.sqrt(2.0 / n_waves))

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        out = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), dtype=np.float32)
        for (wx, wy, wz), phase in zip(self.omega, self.phase):
            out += np.cos(wx * x + wy * y + wz * z + phase)
        return out * self.scale


@dataclass
class HeadParams:
    """One subject's anatomy: sizes in mm, random texture fields, and structure placement."""

    axes: np.ndarray  # skin surface semi-axes (x, y, z)
    egg: float  # widening towards the back of the head
    skin: float
    fat: float
    skull: float  # mean skull thickness
    outer_table: float
    inner_table: float
    csf: float  # subarachnoid CSF layer
    sulcus_depth: float
    ventricle_scale: float
    frontal_sinus: float  # extra frontal bone thickness holding the sinus
    temporal_muscle: float
    surface: FourierField  # shape perturbation of the skin surface (on the unit sphere)
    folds: FourierField  # gyri and sulci
    sinus_cells: FourierField
    bone_texture: FourierField
    brain_texture: FourierField


def sample_head(rng: np.random.Generator) -> HeadParams:
    """Draw one subject's anatomy: size, layer thicknesses, ventricles and texture fields."""
    return HeadParams(
        axes=(REF_AXES * rng.uniform(0.95, 1.05) * rng.uniform(0.97, 1.03, 3)).astype(np.float32),
        egg=float(rng.uniform(0.04, 0.12)),
        skin=float(rng.uniform(1.5, 2.5)),
        fat=float(rng.uniform(3.0, 6.0)),
        skull=float(rng.uniform(5.0, 9.0)),
        outer_table=float(rng.uniform(1.4, 2.2)),
        inner_table=float(rng.uniform(1.1, 1.7)),
        csf=float(rng.uniform(1.2, 2.8)),
        sulcus_depth=float(rng.uniform(7.0, 12.0)),
        ventricle_scale=float(rng.uniform(0.7, 1.5)),
        frontal_sinus=float(rng.uniform(7.0, 13.0)),
        temporal_muscle=float(rng.uniform(3.0, 6.0)),
        surface=FourierField(rng, 0.6, 8),  # on the unit sphere: a few lobes
        folds=FourierField(rng, 7.0, 16),
        sinus_cells=FourierField(rng, 4.0, 10),
        bone_texture=FourierField(rng, 3.0, 10),
        brain_texture=FourierField(rng, 10.0, 8),
    )


def _direction_weight(ux, uy, uz, direction, width: float) -> np.ndarray:
    """exp(-angle²/2width²)-like bump around a unit direction (cheap: uses the cosine)."""
    d = np.asarray(direction, dtype=np.float32)
    d = d / np.linalg.norm(d)
    cos = ux * d[0] + uy * d[1] + uz * d[2]
    return np.exp((cos - 1.0) / np.float32(width**2))


def head_labels(px: np.ndarray, py: np.ndarray, pz: np.ndarray, head: HeadParams) -> tuple[np.ndarray, np.ndarray]:
    """Tissue labels (uint8) at head coordinates, and a texture field in [-1, 1]-ish for contrast.

    The texture is the bone texture inside bone and the brain texture elsewhere, so renderers
    can vary intensities within a tissue consistently under any pose.
    """
    f32 = np.float32
    r = np.sqrt(px * px + py * py + pz * pz) + f32(1e-3)
    ux, uy, uz = px / r, py / r, pz / r

    # Skin surface radius along each direction: egg-shaped ellipsoid with lobular perturbation.
    a, b, c = head.axes
    a_eff = a * (1.0 + head.egg * uy)  # wider at the back (y points posterior)
    radius = 1.0 / np.sqrt((ux / a_eff) ** 2 + (uy / b) ** 2 + (uz / c) ** 2)
    radius *= 1.0 + f32(0.025) * head.surface(ux, uy, uz)
    depth = radius - r  # mm below the skin, measured along the ray from the centre

    temporal = _direction_weight(np.abs(ux), uy, uz, (1.0, 0.05, -0.25), 0.45)
    frontal = _direction_weight(ux, uy, uz, (0.0, -1.0, -0.3), 0.3)
    occipital = _direction_weight(ux, uy, uz, (0.0, 1.0, -0.2), 0.5)
    mastoid = _direction_weight(np.abs(ux), uy, uz, (0.75, 0.5, -0.4), 0.2)

    fat_start = head.skin
    fat_end = fat_start + head.fat
    bone_start = fat_end + 1.0 + head.temporal_muscle * temporal  # galea/periosteum and temporalis muscle
    skull = head.skull * (1.0 - 0.35 * temporal + 0.25 * occipital) + head.frontal_sinus * frontal + 5.0 * mastoid
    bone_end = bone_start + skull
    brain_start = bone_end + head.csf

    labels = np.zeros(r.shape, dtype=np.uint8)
    labels[depth >= 0] = SCALP
    labels[(depth >= fat_start) & (depth < fat_end)] = FAT
    in_bone = (depth >= bone_start) & (depth < bone_end)
    labels[in_bone] = CORTICAL_BONE
    diploe = in_bone & (depth >= bone_start + head.outer_table) & (depth < bone_end - head.inner_table)
    labels[diploe] = DIPLOE
    labels[depth >= bone_end] = CSF

    texture = np.zeros(r.shape, dtype=np.float32)
    bone_idx = np.flatnonzero(in_bone)
    texture.flat[bone_idx] = head.bone_texture(px.flat[bone_idx], py.flat[bone_idx], pz.flat[bone_idx])

    # Air cells: frontal sinus lobes (midline bony septum) and honeycomb mastoid cells, inside diploë.
    cells = np.flatnonzero(diploe & ((frontal > 0.45) | (mastoid > 0.45)))
    if cells.size:
        cx, cy, cz = px.flat[cells], py.flat[cells], pz.flat[cells]
        fr, ma = frontal.flat[cells], mastoid.flat[cells]
        d = depth.flat[cells]
        margin = (d - bone_start.flat[cells] - head.outer_table > 1.0) & (bone_end.flat[cells] - head.inner_table - d > 1.0)
        noise = head.sinus_cells(cx, cy, cz)
        air = margin & (((fr * (1.0 + 0.25 * noise) > 0.6) & (np.abs(cx) > 1.2)) | ((ma > 0.45) & (noise > 0.2)))
        labels.flat[cells[air]] = SINUS

    brain = np.flatnonzero(depth >= brain_start)
    if brain.size:
        bx, by, bz = px.flat[brain], py.flat[brain], pz.flat[brain]
        labels.flat[brain] = _brain_labels(bx, by, bz, depth.flat[brain] - brain_start.flat[brain], head)
        texture.flat[brain] = head.brain_texture(bx, by, bz)
    return labels, texture


def _brain_labels(x: np.ndarray, y: np.ndarray, z: np.ndarray, depth: np.ndarray, head: HeadParams) -> np.ndarray:
    """Cortex, white matter, sulci, fissure, ventricles and deep grey nuclei (depth below the brain surface)."""
    scale = head.axes / REF_AXES
    nx, ny, nz = x / scale[0], y / scale[1], z / scale[2]  # reference-head coordinates

    # Midline fissure: the medial surface counts as brain surface (cortex lines it) everywhere
    # but in a central core holding the corpus callosum, ventricles and deep grey nuclei.
    fissure_zone = (ny / 42.0) ** 2 + ((nz + 6.0) / 26.0) ** 2 > 1.0
    medial = np.where(fissure_zone, np.abs(nx) - 1.0, np.float32(np.inf))
    surface_depth = np.minimum(depth, medial)

    folds = head.folds(x, y, z)
    fold_abs = np.abs(folds)
    # Grey matter follows each sulcus to its fundus; white matter reaches up into the gyri.
    wm_depth = 2.6 + (head.sulcus_depth + 1.5) * np.clip(1.0 - fold_abs / 0.55, 0.0, 1.0)
    labels = np.where(surface_depth < wm_depth, GREY_MATTER, WHITE_MATTER).astype(np.uint8)
    sulcus = (fold_abs < 0.09) & (surface_depth < head.sulcus_depth)
    labels[sulcus | (surface_depth < 0)] = CSF

    # Deep grey nuclei: diencephalon (thalami meet at the midline), thalami and basal ganglia.
    labels[_ellipsoid(nx, ny, nz, (0.0, 4.0, -12.0), (9.0, 16.0, 9.0)) & (surface_depth > wm_depth)] = GREY_MATTER
    for sx in (-1.0, 1.0):
        if_thal = _ellipsoid(nx, ny, nz, (11.0 * sx, 6.0, -2.0), (8.0, 13.0, 9.0))
        if_bg = _ellipsoid(nx, ny, nz, (21.0 * sx, -10.0, 0.0), (6.0, 14.0, 10.0))
        labels[(if_thal | if_bg) & (surface_depth > wm_depth)] = GREY_MATTER

    # Lateral ventricles: arched, bulging towards the frontal horns; third ventricle at the midline.
    vs = head.ventricle_scale
    arch = 12.0 - 0.008 * ny**2
    for sx in (-1.0, 1.0):
        centre_x = sx * (6.0 + 0.08 * np.abs(ny)) * min(vs, 1.2)
        body = ((nx - centre_x) / (4.0 * vs)) ** 2 + (ny / 30.0) ** 2 + ((nz - arch) / (5.5 * vs)) ** 2 < 1.0
        labels[body] = CSF
    third = _ellipsoid(nx, ny, nz, (0.0, -2.0, -5.0), (1.2 * vs, 12.0, 10.0))
    labels[third] = CSF
    return labels


def _ellipsoid(x, y, z, centre, radii) -> np.ndarray:
    return ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((z - centre[2]) / radii[2]) ** 2 < 1.0
