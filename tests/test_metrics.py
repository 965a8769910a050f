"""Metric formulas (vfusion.evaluation.metrics), streaming statistics and cache (features),
per-frame FID (fid), each checked against an independent computation."""

import numpy as np
import pytest
import torch
from torch import nn

from vfusion.evaluation import metrics as M
from vfusion.evaluation.features import FeatureStats, RowBuffer, cache_file, load_cached, save_cached
from vfusion.evaluation.fid import FrameFID, frames_uint8


def _psd_sqrt(a):
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def independent_frechet(mu1, s1, mu2, s2):
    """Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2), both symmetric: eigh only, no sqrtm."""
    r = _psd_sqrt(s1)
    middle = np.linalg.eigvalsh(r @ s2 @ r)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(middle, 0, None)).sum())


def _stats(x):
    return x.mean(0), np.cov(x, rowvar=False, ddof=0)


# --------------------------------------------------------------------------- Fréchet distance

def test_frechet_matches_independent_computation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 16)) @ rng.normal(size=(16, 16))
    b = rng.normal(0.3, 1.5, size=(400, 16)) @ rng.normal(size=(16, 16))
    got = M.frechet_distance(*_stats(a), *_stats(b))
    want = independent_frechet(*_stats(a), *_stats(b))
    assert got == pytest.approx(want, rel=1e-8)
    assert got > 1.0
    assert M.frechet_distance_from_features(a, b) == pytest.approx(want, rel=1e-8)


def test_frechet_one_dimensional_closed_form():
    # N(m1, s1^2) vs N(m2, s2^2): (m1 - m2)^2 + (s1 - s2)^2
    assert M.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)


def test_frechet_of_identical_stats_is_zero():
    rng = np.random.default_rng(1)
    mu, sigma = _stats(rng.normal(size=(300, 12)))
    assert abs(M.frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_frechet_near_singular_covariances():
    # fewer samples than dimensions: rank-deficient covariances (as with 64 clips of 400-d I3D logits)
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(10, 32)), rng.normal(0.5, 1.0, size=(12, 32))
    got = M.frechet_distance(*_stats(a), *_stats(b))
    want = independent_frechet(*_stats(a), *_stats(b))
    assert np.isfinite(got)
    assert got == pytest.approx(want, rel=1e-4, abs=1e-4)


def test_frechet_retries_with_eps_when_sqrtm_is_not_finite(monkeypatch):
    rng = np.random.default_rng(3)
    mu1, s1 = _stats(rng.normal(size=(50, 4)))
    mu2, s2 = _stats(rng.normal(size=(50, 4)))
    real_sqrtm = M.scipy.linalg.sqrtm
    calls = []

    def flaky(a):
        calls.append(a)
        return np.full_like(a, np.inf) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(M.scipy.linalg, "sqrtm", flaky)
    with pytest.warns(UserWarning, match="retrying"):
        got = M.frechet_distance(mu1, s1, mu2, s2, eps=1e-6)
    assert len(calls) == 2 and np.allclose(calls[1], (s1 + 1e-6 * np.eye(4)) @ (s2 + 1e-6 * np.eye(4)))
    assert got == pytest.approx(independent_frechet(mu1, s1, mu2, s2), rel=1e-4)


def test_frechet_rejects_bad_input():
    with pytest.raises(ValueError, match="shapes"):
        M.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        M.frechet_distance(np.zeros(2), np.eye(2) * np.nan, np.zeros(2), np.eye(2))


# --------------------------------------------------------------------------- KVD

def test_mmd_matches_naive_double_loop():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(7, 5)), rng.normal(0.2, 1.0, size=(7, 5))
    k = lambda a, b: (a @ b / 5 + 1.0) ** 3  # noqa: E731 - the kernel of the protocol, spelled out
    m = 7
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    assert M.mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_kvd_near_zero_for_one_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    c = rng.normal(0.5, 1.0, size=(300, 16))
    same, same_std = M.kernel_distance(a, b, num_subsets=20, max_subset_size=200)
    shifted, _ = M.kernel_distance(a, c, num_subsets=20, max_subset_size=200)
    assert abs(same) < 3 * same_std + 1e-3
    assert shifted > 20 * abs(same) and shifted > 10 * same_std


def test_kvd_subset_size_and_seed():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(40, 3)), rng.normal(size=(30, 3))
    assert M.kernel_distance(a, b, seed=1) == M.kernel_distance(a, b, seed=1)
    assert M.kernel_distance(a, b, seed=1) != M.kernel_distance(a, b, seed=2)
    # one subset as large as the smaller set: the fake set is used whole, in some order
    v, _ = M.kernel_distance(a, b, num_subsets=1, max_subset_size=1000, seed=0)
    idx = np.random.default_rng(0).choice(30, 30, replace=False)
    ridx = np.random.default_rng(0)
    ridx.choice(30, 30, replace=False)
    assert v == pytest.approx(M.mmd2_unbiased(b[idx], a[ridx.choice(40, 30, replace=False)]))
    with pytest.raises(ValueError, match="at least 2"):
        M.kernel_distance(a[:1], b)


# --------------------------------------------------------------------------- Inception Score

def test_is_is_one_for_identical_predictions():
    p = np.tile(M.softmax(np.random.default_rng(7).normal(size=(1, 10))), (50, 1))
    mean, std = M.inception_score(p)
    assert mean == pytest.approx(1.0, abs=1e-9) and std == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("k", [2, 5, 101])
def test_is_is_k_for_k_confident_equally_frequent_classes(k):
    labels = np.arange(10 * k * 2) % k  # every split holds each class twice
    p = np.eye(k)[labels]
    mean, std = M.inception_score(p)
    assert mean == pytest.approx(k, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)


def test_is_single_split_formula_and_input_checks():
    p = M.softmax(np.random.default_rng(8).normal(size=(40, 6)) * 2)
    py = p.mean(0)
    want = np.exp(np.mean(np.sum(p * np.log(p / py), axis=1)))
    assert M.inception_score(p, num_splits=1)[0] == pytest.approx(want, rel=1e-9)
    with pytest.raises(ValueError, match="softmax"):
        M.inception_score(np.ones((20, 3)))
    with pytest.raises(ValueError, match="num_splits"):
        M.inception_score(np.eye(3))


# --------------------------------------------------------------------------- streaming statistics

def test_streaming_stats_equal_batch_stats():
    rng = np.random.default_rng(9)
    x = rng.normal(3.0, 2.0, size=(237, 20))
    stats = FeatureStats(keep_features=True)
    start = 0
    for size in (1, 16, 100, 7, 113):
        stats.update(torch.from_numpy(x[start:start + size]) if size == 16 else x[start:start + size])
        start += size
    assert stats.num == 237
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov(), np.cov(x, rowvar=False, ddof=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats.cov(ddof=1), np.cov(x, rowvar=False, ddof=1), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(stats.features(), x)
    back = FeatureStats.from_state(stats.state())
    np.testing.assert_array_equal(back.cov(), stats.cov())
    np.testing.assert_array_equal(back.features(), x)


def test_streaming_stats_memory_is_independent_of_n_without_features():
    stats = FeatureStats()
    for _ in range(50):
        stats.update(np.ones((10, 4)))
    assert stats._rows is None and stats.outer.shape == (4, 4)
    with pytest.raises(RuntimeError, match="keep_features"):
        stats.features()
    with pytest.raises(ValueError, match="NaN"):
        stats.update(np.full((1, 4), np.nan))
    with pytest.raises(ValueError, match="size changed"):
        stats.update(np.ones((1, 5)))


def test_row_buffer_grows_and_keeps_order():
    rng = np.random.default_rng(10)
    parts = [rng.normal(size=(n, 3)) for n in (5, 1, 9, 300, 2)]
    buf = RowBuffer(initial_rows=4)
    for p in parts:
        buf.append(p)
    np.testing.assert_array_equal(buf.array(), np.concatenate(parts))
    with pytest.raises(ValueError, match="row size"):
        buf.append(np.zeros((1, 4)))


def test_cache_round_trip_checks_the_key(tmp_path):
    key = {"dataset": "ucf101", "split": "test", "resolution": 32, "num_frames": 16, "frame_stride": 3,
           "num_videos": 64, "detector": "i3d_k400", "sha256": "ab" * 32}
    path = cache_file(tmp_path, key)
    assert path.name.startswith("ucf101_test_32px_16f_s3_n64_i3d_k400_")
    save_cached(path, {"a": np.arange(5.0)}, key)
    np.testing.assert_array_equal(load_cached(path, key)["a"], np.arange(5.0))
    assert load_cached(path, dict(key, sha256="cd" * 32)) is None      # another detector file
    assert cache_file(tmp_path, dict(key, sha256="cd" * 32)) != path
    assert [p.name for p in tmp_path.iterdir()] == [path.name]          # no temporary file left
    path.write_bytes(b"truncated")
    assert load_cached(path, key) is None


# --------------------------------------------------------------------------- per-frame FID (torchmetrics)

class TinyFrameNet(nn.Module):
    """A random conv net standing in for Inception: uint8 (N, 3, H, W) -> (N, 6)."""

    num_features = 6

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3)
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        assert x.dtype == torch.uint8
        h = torch.tanh(self.conv(x.float() / 127.5 - 1)).mean((2, 3))
        return self.fc(h)


def test_frame_fid_equals_our_frechet_on_the_same_features_and_restores_real_state():
    torch.manual_seed(1)
    net = TinyFrameNet()
    real = torch.rand(6, 3, 4, 8, 8) * 2 - 1
    fake = (torch.rand(5, 3, 4, 8, 8) * 2 - 1) * 0.5 + 0.3
    fid = FrameFID(net, frame_batch=7)
    fid.update(real, real=True)
    fid.update(fake, real=False)
    assert (fid.num_real, fid.num_fake) == (24, 20)
    with torch.no_grad():
        fr, ff = net(frames_uint8(real)).double().numpy(), net(frames_uint8(fake)).double().numpy()
    want = M.frechet_distance_from_features(fr, ff, ddof=1)  # torchmetrics: unbiased covariance
    assert fid.compute() == pytest.approx(want, rel=1e-3)

    again = FrameFID(net)
    again.load_real_state(fid.real_state())
    again.update(fake, real=False)
    assert again.compute() == pytest.approx(fid.compute(), rel=1e-6)

    same = FrameFID(net)
    same.update(real, real=True)
    same.update(real, real=False)
    assert abs(same.compute()) < 1e-3
