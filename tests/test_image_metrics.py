"""Image-set metrics: SWD, FID, KID, the Inception feature extractor's weight layout, memorisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from counterfeit.errors import InputFileError
from counterfeit.evaluation.fid import (
    extract_features,
    fid_from_features,
    fid_kid,
    frechet_distance,
    kid_from_features,
)
from counterfeit.evaluation.memorization import memorization_check, save_closest_pairs
from counterfeit.evaluation.swd import SWDSettings, laplacian_pyramid, pyr_up, sliced_wasserstein_distance
from counterfeit.metrics import METRICS
from counterfeit.nets.inception import InceptionV3Features, load_inception

FAST_SWD = SWDSettings(patches_per_image=32, repeats=2, directions_per_repeat=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _blobs(n: int = 48, size: int = 32, seed: int = 0) -> np.ndarray:
    """Smooth random images in [-1, 1]: a few Gaussian blobs each (structure SWD can see)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.full((n, 1, size, size), -1.0, np.float32)
    for i in range(n):
        for _ in range(3):
            cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.2)
            out[i, 0] += 1.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return np.clip(out, -1, 1)


def _noisy(x: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    return (x + sigma * np.random.default_rng(seed).standard_normal(x.shape)).astype(np.float32)


# --- SWD -------------------------------------------------------------------------------------------

def test_laplacian_pyramid_reconstructs_the_image():
    x = _blobs(4, 32)
    pyr = laplacian_pyramid(x, 3)
    assert [p.shape[-1] for p in pyr] == [32, 16, 8]
    rec = pyr[-1]
    for band in pyr[-2::-1]:
        rec = pyr_up(rec) + band
    np.testing.assert_allclose(rec, x, atol=1e-5)


def test_swd_is_zero_on_identical_sets_and_grows_with_noise():
    real = _blobs(48, 32)
    same = sliced_wasserstein_distance(real, real.copy(), FAST_SWD, seed=0)
    assert set(same) == {"swd_32", "swd_16", "swd"}
    assert same["swd"] == pytest.approx(0.0, abs=1e-9)
    values = [sliced_wasserstein_distance(real, _noisy(real, s), FAST_SWD)["swd"] for s in (0.02, 0.1, 0.4)]
    assert values[0] > 1.0 and values[0] < values[1] < values[2]
    # A different sample of the same distribution is much closer than a noisy copy of this one.
    other = sliced_wasserstein_distance(real, _blobs(48, 32, seed=5), FAST_SWD)["swd"]
    assert other < values[2]


def test_swd_rejects_mismatched_sets():
    with pytest.raises(ValueError, match="same shape"):
        sliced_wasserstein_distance(_blobs(8), _blobs(9), FAST_SWD)


# --- FID / KID -------------------------------------------------------------------------------------

def test_frechet_distance_matches_closed_forms():
    # 1D: N(0, 1) vs N(0, 4): 0 + 1 + 4 - 2 * sqrt(4) = 1; mean shift adds its squared norm.
    assert frechet_distance(np.zeros(1), np.eye(1), np.zeros(1), 4 * np.eye(1)) == pytest.approx(1.0)
    assert frechet_distance(np.zeros(3), np.eye(3), np.full(3, 2.0), np.eye(3)) == pytest.approx(12.0)


def test_fid_and_kid_on_features():
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((16, 16)) / 4  # features of about unit scale, as KID's kernel expects
    real = rng.standard_normal((400, 16)) @ mix
    other = rng.standard_normal((400, 16)) @ mix  # an independent sample of the same distribution
    assert fid_from_features(real, real.copy()) == pytest.approx(0.0, abs=1e-6)
    kid_same, _ = kid_from_features(real, other, n_subsets=10, subset_size=200)
    fids, kids = [], []
    for sigma in (1.0, 2.0, 4.0):
        fake = other + sigma * rng.standard_normal(other.shape)
        fids.append(fid_from_features(real, fake))
        kids.append(kid_from_features(real, fake, n_subsets=10, subset_size=200)[0])
    assert fid_from_features(real, other) < fids[0] < fids[1] < fids[2]
    assert abs(kid_same) < 0.2 * kids[0] and kids[0] < kids[1] < kids[2]


def test_fid_of_singular_features_warns_once_in_its_own_words():
    """Dead (constant) features make the covariance singular: one warning of ours, none of scipy's."""
    import warnings

    rng = np.random.default_rng(0)
    real, fake = (np.maximum(rng.standard_normal((16, 64)), 0) for _ in range(2))
    real[:, :40] = fake[:, :40] = 0  # as ReLU features of a random network often are
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = fid_from_features(real, fake)
    assert [type(w.message) for w in caught] == [UserWarning], [str(w.message) for w in caught]
    assert "singular" in str(caught[0].message) and "same number of samples" in str(caught[0].message)
    assert np.isfinite(value) and value > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a well-conditioned pair warns nothing
        fid_from_features(rng.standard_normal((200, 8)), rng.standard_normal((200, 8)))


class _TinyExtractor(torch.nn.Module):
    """A fixed random conv net: any extractor works with fid_kid, and its name is reported."""

    name = "tiny-random-conv"

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, stride=2), torch.nn.ReLU(),
                                       torch.nn.Conv2d(8, 8, 3, stride=2), torch.nn.AdaptiveAvgPool2d(2))

    def forward(self, x):
        return self.net(x).flatten(1)


def test_fid_kid_on_images_report_the_extractor():
    real = _blobs(64, 32)
    other = _blobs(64, 32, seed=5)  # same distribution, different images
    ext = _TinyExtractor()
    same = fid_kid(real, real, ext, kid_subsets=5, kid_subset_size=64)
    assert same["extractor"] == "tiny-random-conv" and same["feature_dim"] == 32
    assert same["fid"] == pytest.approx(0.0, abs=1e-6)
    base = fid_kid(real, other, ext, kid_subsets=5, kid_subset_size=64)
    noisy = [fid_kid(real, _noisy(other, s), ext, kid_subsets=5, kid_subset_size=64) for s in (0.2, 0.6)]
    assert base["fid"] < noisy[0]["fid"] < noisy[1]["fid"]
    assert abs(base["kid"]) < noisy[0]["kid"] < noisy[1]["kid"]


# --- Inception weights layout -----------------------------------------------------------------------

# Facts about torchvision's Inception3 / pytorch-fid's FID Inception state dict (not derived from our module).
TORCHVISION_KEYS = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_4a_3x3.bn.running_var": (192,),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.bn.bias": (192,),
}
FEATURE_PARAMS = 21_785_568  # torchvision inception_v3: 27,161,264 minus AuxLogits (3,326,696) and fc (2,049,000)


def _fid_style_state_dict() -> dict[str, torch.Tensor]:
    """Random weights with pytorch-fid's layout: feature keys plus a 1008-class fc, no num_batches_tracked."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for k, v in InceptionV3Features().state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.endswith("running_var"):
            state[k] = 0.5 + torch.rand(v.shape, generator=gen)
        else:
            state[k] = 0.1 * torch.randn(v.shape, generator=gen)
    state["fc.weight"] = torch.randn(1008, 2048, generator=gen)
    state["fc.bias"] = torch.zeros(1008)
    return state


def test_inception_has_torchvision_key_layout():
    net = InceptionV3Features()
    own = net.state_dict()
    for key, shape in TORCHVISION_KEYS.items():
        assert tuple(own[key].shape) == shape, key
    assert sum(p.numel() for p in net.parameters()) == FEATURE_PARAMS


def test_inception_loads_pth_and_safetensors(tmp_path):
    state = _fid_style_state_dict()
    torch.save(state, tmp_path / "pt_inception.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "inception.safetensors"))
    a = load_inception(tmp_path / "pt_inception.pth")
    b = load_inception(tmp_path / "inception.safetensors")
    assert a.name == "inception-v3-fid[pt_inception.pth]"
    torch.testing.assert_close(a.Mixed_7c.branch_pool.bn.running_var, state["Mixed_7c.branch_pool.bn.running_var"])
    for k, v in b.state_dict().items():
        torch.testing.assert_close(v, a.state_dict()[k])
    x = _blobs(2, 32)  # grayscale, resized to 299 inside
    fa = torch.from_numpy(extract_features(a, x, batch_size=1))
    assert fa.shape == (2, 2048) and torch.isfinite(fa).all() and fa.std() > 0
    # The torchvision variant pools differently (padding counted, no max pool in Mixed_7c).
    tv = InceptionV3Features("torchvision").load_weights(state)
    assert not torch.allclose(tv(torch.from_numpy(x)).double(), fa)


def test_inception_rejects_wrong_weights(tmp_path):
    state = _fid_style_state_dict()
    missing = dict(state)
    del missing["Mixed_6b.branch1x1.conv.weight"]
    with pytest.raises(InputFileError, match="1 missing.*Mixed_6b"):
        InceptionV3Features().load_weights(missing, "x.pth")
    wrong = dict(state)
    wrong["Conv2d_1a_3x3.conv.weight"] = torch.zeros(32, 1, 3, 3)
    with pytest.raises(InputFileError, match="shape mismatch"):
        InceptionV3Features().load_weights(wrong, "x.pth")
    torch.save({"obj": _TinyExtractor}, tmp_path / "pickled.pth")  # not plain tensors
    with pytest.raises(InputFileError, match="refused|state dict"):
        load_inception(tmp_path / "pickled.pth")
    with pytest.raises(InputFileError, match="not found"):
        load_inception(tmp_path / "nothing.pth")


# --- memorisation ------------------------------------------------------------------------------------

def test_memorization_finds_exact_copies():
    training = _blobs(40, 16)
    generated = np.concatenate([training[[7]], _noisy(training[[3]], 0.05), _blobs(6, 16, seed=9)])
    result = memorization_check(generated, training, reference=_blobs(10, 16, seed=11))
    assert result.distances[0] == 0.0 and result.indices[0] == 7
    assert result.indices[1] == 3 and 0.03 < result.distances[1] < 0.07  # RMS of N(0, 0.05²) noise
    assert result.distances[2:].min() > result.distances[1]
    assert result.closest_pairs(2) == [(0, 7, 0.0), (1, 3, pytest.approx(result.distances[1]))]
    assert result.summary["nn_min"] == 0.0 and result.summary["near_copies"] == pytest.approx(1 / 8)
    copies = memorization_check(training[:10], training, reference=_blobs(10, 16, seed=11))
    assert copies.summary["nn_ratio"] == 0.0 and result.summary["nn_ratio"] > 0.0


def test_closest_pairs_figure(tmp_path):
    training = _blobs(10, 16)
    result = memorization_check(training[:3], training)
    path = save_closest_pairs(result, training[:3], training, tmp_path / "pairs.png", k=3)
    from PIL import Image

    assert np.asarray(Image.open(path)).shape == (2 * 18 + 2, 3 * 18 + 2)


def test_metrics_are_registered():
    import counterfeit.evaluation  # noqa: F401  (registers on import)

    for name in ("swd", "fid", "kid", "nearest_neighbour"):
        assert name in METRICS
