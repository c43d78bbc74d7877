"""Slice extraction, padding, and the paired / unpaired training samplers."""

from __future__ import annotations

import numpy as np
import pytest

from counterfeit.medical.slicing import (
    PairedSliceSampler,
    SliceStack,
    UnpairedSliceSampler,
    pad_to_multiple,
    stack_slices,
    volume_slices,
)


def _coded_volume(subject: int, shape=(6, 10, 12), empty_slices=(0, 1)) -> np.ndarray:
    """A body block whose values encode subject, slice and column, so samples reveal their origin."""
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    vol = np.full(shape, -1.0, np.float32)
    body = (y >= 2) & (y < shape[1] - 2)
    vol[body] = (0.5 * subject + 0.01 * z[body] + 0.0001 * x[body] - 0.6).astype(np.float32)
    vol[list(empty_slices)] = -1.0
    return vol


def _decode(img: np.ndarray) -> tuple[int, int]:
    """(subject, slice) of a sampled image (C=1) from any body pixel."""
    v = float(img[img > -1.0].max()) + 0.6  # = 0.5 subject + 0.01 slice + 0.0001 column
    subject = int(v // 0.5)
    return subject, int((v - 0.5 * subject) // 0.01)


def test_volume_slices_2d_and_25d():
    vol = np.arange(4 * 3 * 5, dtype=np.float32).reshape(4, 3, 5)
    s = volume_slices(vol)
    assert s.shape == (4, 1, 3, 5)
    np.testing.assert_array_equal(s[:, 0], vol)
    s3 = volume_slices(vol, context=3)
    assert s3.shape == (4, 3, 3, 5)
    np.testing.assert_array_equal(s3[2], vol[1:4])
    np.testing.assert_array_equal(s3[0], vol[[0, 0, 1]])  # edges repeat the end slice
    np.testing.assert_array_equal(s3[-1], vol[[2, 3, 3]])
    with pytest.raises(ValueError, match="odd"):
        volume_slices(vol, context=2)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_stack_slices_inverts_volume_slices(axis):
    vol = np.random.default_rng(axis).normal(size=(4, 5, 6)).astype(np.float32)
    s = volume_slices(vol, axis=axis)
    assert s.shape[0] == vol.shape[axis]
    np.testing.assert_array_equal(stack_slices(s, axis=axis), vol)
    np.testing.assert_array_equal(stack_slices(s[:, 0], axis=axis), vol)
    with pytest.raises(ValueError):
        stack_slices(volume_slices(vol, axis=axis, context=3), axis=axis)


def test_pad_to_multiple_and_crop_back():
    img = np.random.default_rng(0).normal(size=(3, 2, 10, 13))
    padded, crop = pad_to_multiple(img, 4)
    assert padded.shape == (3, 2, 12, 16)
    np.testing.assert_array_equal(padded[crop], img)
    same, crop = pad_to_multiple(img[..., :8, :12], 4)
    assert same.shape == (3, 2, 8, 12)


def test_slice_stack_skips_empty_slices():
    stack = SliceStack([_coded_volume(0), _coded_volume(1, empty_slices=(5,))])
    assert stack.items.tolist() == [[0, z] for z in range(2, 6)] + [[1, z] for z in range(5)]
    assert stack.slices(0, 0, context=3).shape == (3, 10, 12)


def test_paired_sampler_pairs_same_subject_and_slice():
    mrs = [_coded_volume(s) for s in range(3)]
    cts = [v.copy() for v in mrs]  # CT = MR here, so a correct pair is identical pixel for pixel
    sampler = PairedSliceSampler(mrs, cts, context=3, crop=8, flip=True)
    mr, ct = sampler.sample(np.random.default_rng(0), 16)
    assert mr.shape == (16, 3, 8, 8) and ct.shape == (16, 1, 8, 8)
    assert mr.dtype == np.float32 and ct.dtype == np.float32
    np.testing.assert_array_equal(mr[:, 1:2], ct)  # the centre MR slice is the CT slice
    for b in range(16):
        subject, z = _decode(ct[b])
        assert z >= 2  # empty slices are never drawn
        # Crops and flips are the same for MR and CT, and neighbours come from the same place.
        ref = mrs[subject][z]
        assert any(
            np.array_equal(ct[b, 0], win)
            for top in range(3)
            for left in range(5)
            for win in (ref[top : top + 8, left : left + 8], ref[top : top + 8, left : left + 8][:, ::-1])
        )
    flipped = [np.all(np.diff(ct[b, 0][ct[b, 0] > -1].reshape(-1, 8)[0]) < 0) for b in range(16)]
    assert 0 < sum(flipped) < 16  # some flipped, some not


def test_samplers_are_deterministic_given_rng():
    mrs = [_coded_volume(s) for s in range(3)]
    for cls in (PairedSliceSampler, UnpairedSliceSampler):
        sampler = cls(mrs, [m.copy() for m in mrs], crop=6, flip=True)
        a = sampler.sample(np.random.default_rng(7), 8)
        b = sampler.sample(np.random.default_rng(7), 8)
        c = sampler.sample(np.random.default_rng(8), 8)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert not np.array_equal(a[0], c[0])


def test_aux_volumes_follow_each_sample_as_a_last_channel():
    mrs = [_coded_volume(s) for s in range(3)]
    cts = [_coded_volume(s) for s in range(3)]
    aux = [-v for v in mrs]  # any volume on the same grid: here the negated image, so it can be checked pixel by pixel
    for cls, kwargs in ((PairedSliceSampler, {}), (UnpairedSliceSampler, {"ct_aux": [-v for v in cts]})):
        plain = cls(mrs, cts, context=3, crop=8, flip=True)
        with_aux = cls(mrs, cts, context=3, crop=8, flip=True, mr_aux=aux, **kwargs)
        mr0, ct0 = plain.sample(np.random.default_rng(4), 12)
        mr, ct = with_aux.sample(np.random.default_rng(4), 12)
        assert mr.shape == (12, 4, 8, 8)
        np.testing.assert_array_equal(mr[:, :3], mr0)  # the same draws: the aux channel consumes no randomness
        np.testing.assert_array_equal(mr[:, 3], -mr0[:, 1])  # same slice, crop and flip as the centre MR slice
        if kwargs:
            assert ct.shape == (12, 2, 8, 8)
            np.testing.assert_array_equal(ct[:, 0], ct0[:, 0])
            np.testing.assert_array_equal(ct[:, 1], -ct0[:, 0])
    with pytest.raises(ValueError, match="mr_aux 1 has shape"):
        PairedSliceSampler(mrs, cts, mr_aux=[aux[0], aux[1][:, :5], aux[2]])
    with pytest.raises(ValueError, match="2 mr_aux volumes for 3"):
        UnpairedSliceSampler(mrs, cts, mr_aux=aux[:2])


def test_unpaired_sampler_draws_different_subjects():
    mrs = [_coded_volume(s) for s in range(3)]
    cts = [_coded_volume(s) for s in range(3)]
    sampler = UnpairedSliceSampler(mrs, cts, context=1, crop=None)
    mr, ct = sampler.sample(np.random.default_rng(3), 64)
    assert mr.shape == ct.shape == (64, 1, 10, 12)
    pairs = [(_decode(mr[b])[0], _decode(ct[b])[0]) for b in range(64)]
    assert all(m != c for m, c in pairs)
    assert {c for _, c in pairs} == {0, 1, 2}
    # Different lengths are fine in the unpaired setting.
    mr, ct = UnpairedSliceSampler(mrs, cts[:1], crop=4).sample(np.random.default_rng(0), 5)
    assert mr.shape == ct.shape == (5, 1, 4, 4)
    assert {_decode(ct[b])[0] for b in range(5)} == {0}


def test_masks_choose_the_slices():
    vols = [_coded_volume(0, empty_slices=())]
    masks = [np.zeros((6, 10, 12), np.uint8)]
    masks[0][3] = 1  # only slice 3 is body according to the mask
    sampler = PairedSliceSampler(vols, vols, masks=masks)
    _, ct = sampler.sample(np.random.default_rng(0), 10)
    assert {_decode(ct[b])[1] for b in range(10)} == {3}


def test_crop_larger_than_slice_pads_with_background():
    vols = [_coded_volume(0)]
    mr, ct = PairedSliceSampler(vols, vols, crop=16).sample(np.random.default_rng(0), 2)
    assert mr.shape == (2, 1, 16, 16)
    assert np.all(mr[:, :, 10:, :] == -1.0) and np.all(mr[:, :, :, 12:] == -1.0)


def test_axis_selection():
    vol = _coded_volume(0)
    sampler = PairedSliceSampler([vol], [vol], axis=2)  # sagittal: slices are (z, y)
    mr, _ = sampler.sample(np.random.default_rng(0), 3)
    assert mr.shape == (3, 1, 6, 10)


def test_sampler_argument_errors():
    a, b = _coded_volume(0), _coded_volume(1, shape=(6, 10, 14))
    with pytest.raises(ValueError, match="MR shape"):
        PairedSliceSampler([a], [b])
    with pytest.raises(ValueError, match="crop"):
        UnpairedSliceSampler([a], [b])  # different slice sizes need a crop
    with pytest.raises(ValueError, match="odd"):
        PairedSliceSampler([a], [a], context=2)
