"""Semantic layouts: palettes, layout PNGs, paired folders, built-in street scenes and phantom slices."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from counterfeit.data.layouts import (
    labels_to_colors,
    load_paired_folder,
    one_hot,
    parse_palette,
    read_image,
    read_layout,
    read_palette,
    resize_labels,
)
from counterfeit.errors import InputFileError, UserError

CITYSCAPES_3 = {"palette": [[128, 64, 128], [244, 35, 232], [70, 70, 70]], "mean": [72.39, 82.91, 73.16]}


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)
    return path


def test_palette_forms_agree():
    a = parse_palette(CITYSCAPES_3)  # the CRN code's dataset JSON
    b = parse_palette([{"name": "road", "color": [128, 64, 128]}, {"name": "sidewalk", "color": [244, 35, 232]},
                       {"name": "building", "color": [70, 70, 70]}])
    c = parse_palette({"road": [128, 64, 128], "sidewalk": [244, 35, 232], "building": [70, 70, 70]})
    d = parse_palette([{"name": "building", "color": [70, 70, 70], "id": 2}, {"name": "road", "color": [128, 64, 128], "id": 0},
                       {"name": "sidewalk", "color": [244, 35, 232], "id": 1}])
    for p in (a, b, c, d):
        assert np.array_equal(p.colors, a.colors)
    assert b.names == c.names == d.names == ("road", "sidewalk", "building")
    back = parse_palette(b.to_list())  # the form a run's config stores
    assert back.names == b.names and np.array_equal(back.colors, b.colors)


@pytest.mark.parametrize(
    "data, message",
    [
        ([], "non-empty list"),
        ([[0, 0, 0], [1, 2]], "class 1.*three integers"),
        ([[0, 0, 256]], "three integers 0..255"),
        ([[0, 0, 0.5]], "three integers"),
        ({"road": [1, 2, 3], "car": [1, 2, 3]}, r"\['road', 'car'\] share the colour \(1, 2, 3\)"),
        ([{"color": [0, 0, 0], "id": 0}, {"color": [1, 1, 1], "id": 2}], "ids must be 0..1"),
        ({"palette": [[0, 0, 0]], "names": ["a", "b"]}, "2 names for 1 colours"),
    ],
)
def test_palette_errors(data, message):
    with pytest.raises(UserError, match=message):
        parse_palette(data)


def test_palette_file_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(InputFileError, match="not valid JSON"):
        read_palette(bad)
    with pytest.raises(InputFileError, match="not found"):
        read_palette(tmp_path / "missing.json")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(CITYSCAPES_3))
    assert len(read_palette(good)) == 3


def test_colour_layouts_map_through_palette_and_report_unknown_colours(tmp_path):
    palette = parse_palette(CITYSCAPES_3)
    labels = np.array([[0, 1, 2, 2], [2, 1, 0, 0]])
    path = _png(tmp_path / "lay.png", labels_to_colors(labels, palette))
    assert np.array_equal(read_layout(path, palette), labels)
    rgb = labels_to_colors(labels, palette)
    rgb[1, 3] = [1, 2, 3]
    bad = _png(tmp_path / "bad.png", rgb)
    with pytest.raises(UserError, match=r"1 pixels have colours not in the palette: \(1, 2, 3\) x1 .*row 1, column 3"):
        read_layout(bad, palette)
    with pytest.raises(InputFileError, match="no palette given"):
        read_layout(path)


def test_palettised_layouts_read_ids_unless_their_colours_say_otherwise(tmp_path):
    palette = parse_palette(CITYSCAPES_3)
    labels = np.array([[0, 1, 2, 2], [2, 1, 0, 0]], dtype=np.uint8)

    def p_png(name, indices, colours):
        img = Image.fromarray(indices, mode="P")
        img.putpalette([int(v) for c in colours for v in c])
        img.save(tmp_path / name)
        return tmp_path / name

    # indices = ids, colours = the palette's: either reading agrees
    assert np.array_equal(read_layout(p_png("same.png", labels, palette.colors), palette), labels)
    # an editor's own index order (reversed), showing the palette's colours: the colours are the layout
    reordered = p_png("reordered.png", 2 - labels, palette.colors[::-1])
    with pytest.warns(UserWarning, match="reading the colours"):
        assert np.array_equal(read_layout(reordered, palette), labels)
    # colours that are not the palette's: the indices are the ids (a label map saved with some display palette)
    grey = p_png("grey.png", labels, [(0, 0, 0), (100, 100, 100), (200, 200, 200)])
    assert np.array_equal(read_layout(grey, palette), labels)


def test_label_id_layouts_are_range_checked(tmp_path):
    path = _png(tmp_path / "ids.png", np.array([[0, 1], [4, 2]], dtype=np.uint8))
    assert np.array_equal(read_layout(path, num_classes=5), [[0, 1], [4, 2]])
    with pytest.raises(UserError, match=r"label id 4 .*row 1, column 0.* outside 0..3 \(4 classes\)"):
        read_layout(path, num_classes=4)


def test_paired_folder_matching_resizing_and_errors(tmp_path):
    lay, img = tmp_path / "layouts", tmp_path / "images"
    rng = np.random.default_rng(0)
    for stem in ("a", "b"):
        _png(lay / f"{stem}.png", rng.integers(0, 3, (8, 16)).astype(np.uint8))
        _png(img / f"{stem}.png", rng.integers(0, 256, (8, 16, 3)).astype(np.uint8))
    pairs = load_paired_folder(lay, img, num_classes=3, size=(4, 8))
    assert pairs.labels.shape == (2, 4, 8) and pairs.images.shape == (2, 3, 4, 8) and pairs.names == ["a", "b"]
    assert pairs.images.min() >= -1 and pairs.images.max() <= 1
    assert np.array_equal(pairs.labels[0], resize_labels(read_layout(lay / "a.png"), (4, 8)))

    _png(img / "c.png", np.zeros((8, 16, 3), dtype=np.uint8))
    _png(lay / "z.png", np.zeros((8, 16), dtype=np.uint8))
    with pytest.raises(UserError, match=r"layouts without an image: \['z'\]; images without a layout: \['c'\]"):
        load_paired_folder(lay, img, num_classes=3)
    (img / "c.png").unlink()
    _png(img / "z.png", np.zeros((6, 16, 3), dtype=np.uint8))
    with pytest.raises(InputFileError, match="image is 6x16 but its layout is 8x16"):
        load_paired_folder(lay, img, num_classes=3)
    _png(img / "z.png", np.zeros((8, 16), dtype=np.uint8))
    with pytest.raises(InputFileError, match="1 channel"):
        load_paired_folder(lay, img, num_classes=3)


def test_read_image_grayscale_16bit(tmp_path):
    path = tmp_path / "ct.png"
    Image.fromarray(np.array([[0, 65535]], dtype=np.uint16)).save(path)
    assert np.allclose(read_image(path), [[[-1.0, 1.0]]])


def test_one_hot():
    oh = one_hot(np.array([[[0, 2], [1, 2]]]), 3)
    assert oh.shape == (1, 3, 2, 2) and float(oh.sum()) == 4 and oh[0, 2, 1, 1] == 1


def test_street_scenes_are_deterministic_and_cover_all_classes():
    from counterfeit.data.street_scenes import STREET_PALETTE, make_street_scenes, render_street_scene

    a = make_street_scenes(6, 32, 64, seed=1)
    b = make_street_scenes(6, 32, 64, seed=1)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.images, b.images)
    assert a.images.shape == (6, 3, 32, 64) and a.images.min() >= -1 and a.images.max() <= 1
    assert set(np.unique(a.labels)) == set(range(len(STREET_PALETTE)))
    # The mapping is one-to-many: two scenes differ in colours even where classes agree.
    lab, img = render_street_scene(np.random.default_rng(5), 32, 64)
    lab2, img2 = render_street_scene(np.random.default_rng(6), 32, 64)
    same = lab == lab2
    assert same.any() and np.abs(img - img2)[:, same].mean() > 0.05


def test_phantom_label_slices():
    from counterfeit.data.phantom_layouts import PHANTOM_PALETTE, phantom_layout_pairs
    from counterfeit.medical.intensity import unit_to_ct

    ct = phantom_layout_pairs("ct", [0], height=16, width=16, depth=8)
    mr = phantom_layout_pairs("mr", [0], height=16, width=16, depth=8)
    assert len(ct) == len(mr) > 0 and ct.images.shape[1:] == (1, 16, 16)
    assert np.array_equal(ct.labels, mr.labels) and ct.labels.max() < len(PHANTOM_PALETTE)
    assert np.array_equal(ct.masks, ct.labels > 0)
    hu = unit_to_ct(ct.images[:, 0])
    assert np.median(hu[ct.labels == 0]) < -900 and np.median(hu[ct.labels == 3]) > 800  # air, cortical bone
    with pytest.raises(UserError, match="modality"):
        phantom_layout_pairs("pet", [0], height=16, width=16, depth=8)
