"""Sample quality: real digits score high, noise low; the cached classifier is reused, and rebuilt when damaged."""
import json
import shutil

import numpy as np
import pytest
import scipy.linalg
import torch

from helpers import quality


@pytest.fixture(scope="session")
def classifier():
    """The cached classifier of the data folder (trained on first use, about 1–3 minutes)."""
    return quality.load_classifier()


@pytest.fixture(scope="session")
def held_out(classifier):
    """Test digits outside the Fréchet reference set, in a fixed order unlike the real baseline's."""
    images, labels = quality.held_out_digits()
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(7))
    return images[pick], labels[pick]


def test_real_batches_never_come_from_the_reference_digits():
    reference, held_out = quality._split()
    assert sorted(reference.tolist() + held_out.tolist()) == list(range(10_000)) and len(held_out) == 5000


def test_classifier_record(classifier):
    _, info = classifier
    assert info["test_accuracy"] >= quality.MIN_ACCURACY
    assert info["torch"] == torch.__version__ and info["recipe"]["seed"] == quality.RECIPE["seed"]
    assert info["sha256"] == quality._sha256(quality.cache_dir() / quality.WEIGHTS_FILE)


def test_real_digits_score_high_and_noise_low(held_out):
    report = quality.sample_quality(held_out[0][:500], value_range=(0, 1))
    assert report.confident >= 0.9 and report.digits == 10
    assert report.noise.confident <= 0.2 and report.noise.digits <= 3
    assert report.frechet < 2 * report.real.frechet and report.frechet < report.noise.frechet / 10
    assert report.real.confident >= 0.9 and report.real.digits == 10 and report.real.n == report.noise.n == 500


def test_a_single_repeated_digit_is_one_digit_present(held_out):
    images, labels = held_out
    sevens = images[labels == 7][:200]
    report = quality.sample_quality(sevens, value_range=(0, 1))
    assert report.digits == 1 and report.samples.shares[7] >= 0.95
    one_image = quality.sample_quality(sevens[:1].repeat(200, 1, 1, 1), value_range=(0, 1))
    assert one_image.digits == 1
    # No variety at all: further from the test digits than varied sevens.
    assert one_image.frechet > report.frechet


def test_value_range_maps_to_the_same_figures(held_out):
    images = held_out[0][:300]
    unit = quality.sample_quality(images, value_range=(0, 1)).samples
    symmetric = quality.sample_quality(2 * images - 1, value_range=(-1, 1)).samples
    flat = quality.sample_quality(images.flatten(1).numpy(), value_range=(0, 1)).samples
    for other in (symmetric, flat):
        assert other.confident == unit.confident and other.digits == unit.digits and other.shares == unit.shares
        assert other.frechet == pytest.approx(unit.frechet, rel=1e-4)
    # Forgetting the range is not harmless: [-1, 1] images read as [0, 1] lose their grey levels.
    wrong = quality.sample_quality(2 * images - 1, value_range=(0, 1)).samples
    assert wrong.frechet != pytest.approx(unit.frechet, rel=1e-2)


@pytest.mark.parametrize("samples, value_range, match", [
    (torch.zeros(8, 3, 28, 28), (0, 1), r"shape \[N, 1, 28, 28\]"),
    (torch.zeros(1, 1, 28, 28), (0, 1), "N ≥ 2"),
    (torch.full((4, 1, 28, 28), float("nan")), (-1, 1), "NaN.*diverged"),
    (torch.zeros(4, 1, 28, 28), (1, 0), "low < high"),
])
def test_bad_input_is_explained(samples, value_range, match):
    with pytest.raises(ValueError, match=match):
        quality.sample_quality(samples, value_range=value_range)


def test_report_reads_and_leaves_random_state_alone(held_out):
    state = torch.random.get_rng_state()
    report = quality.sample_quality(held_out[0][:100], value_range=(0, 1), label="my EBM")
    assert torch.equal(state, torch.random.get_rng_state())
    text = str(report)
    assert "my EBM" in text and "real test digits" in text and "uniform noise" in text
    assert f"{report.frechet:.1f}" in text and f"{report.noise.frechet:.1f}" in text
    caption = report.caption()
    assert f"{report.confident:.0%} confident" in caption and f"{report.digits}/10 digits" in caption
    assert f"{report.real.frechet:.1f}" in caption and "N = 100" in caption


@pytest.mark.parametrize("n", [500, 50])  # full rank, and fewer samples than the 128 features
def test_frechet_distance_matches_scipy(n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=(n, 128)), rng.normal(0.3, 1.5, size=(n, 128)) @ rng.normal(size=(128, 128)) / 10
    mu1, mu2, cov1, cov2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    cross = scipy.linalg.sqrtm(cov1 @ cov2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(cross)
    assert quality.frechet_distance(mu1, cov1, mu2, cov2) == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert quality.frechet_distance(mu1, cov1, mu1, cov1) == pytest.approx(0, abs=1e-6)
    assert quality.frechet_distance(mu1, cov1.astype(np.float32), mu2, cov2) == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------------- the cache
@pytest.fixture
def cache_copy(classifier, tmp_path, monkeypatch):
    """A copy of the good cache; training is replaced by handing back the good model, and counted."""
    folder = tmp_path / "quality"
    shutil.copytree(quality.cache_dir(), folder)
    trained = []

    def fake_train(log=print):
        trained.append(1)
        model, info = classifier
        return model, {k: v for k, v in info.items() if k != "sha256"}

    monkeypatch.setattr(quality, "_train", fake_train)
    yield folder, trained
    quality._LOADED.pop(folder.resolve(), None)


def test_cache_is_reused(cache_copy):
    folder, trained = cache_copy
    stamp = (folder / quality.WEIGHTS_FILE).stat().st_mtime_ns
    model, info = quality.load_classifier(folder)
    quality._LOADED.clear()  # a new process
    again, _ = quality.load_classifier(folder)
    assert trained == [] and (folder / quality.WEIGHTS_FILE).stat().st_mtime_ns == stamp
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), again.state_dict().values()))


def _flip_a_byte(folder):
    path = folder / quality.WEIGHTS_FILE
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


def _truncate(folder):
    path = folder / quality.WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[:1000])


def _garbage_json(folder):
    (folder / quality.INFO_FILE).write_text("{not json")


def _not_a_state_dict(folder):
    # Consistent checksum, wrong content: loading itself must fail cleanly.
    torch.save({"weights": [1, 2, 3]}, folder / quality.WEIGHTS_FILE)
    info = json.loads((folder / quality.INFO_FILE).read_text())
    info["sha256"] = quality._sha256(folder / quality.WEIGHTS_FILE)
    (folder / quality.INFO_FILE).write_text(json.dumps(info))


def _missing(folder):
    (folder / quality.WEIGHTS_FILE).unlink()


@pytest.mark.parametrize("damage, reason", [
    (_flip_a_byte, "does not match the checksum"), (_truncate, "does not match the checksum"),
    (_garbage_json, "JSONDecodeError"), (_not_a_state_dict, "state_dict"), (_missing, "not built yet"),
])
def test_damaged_cache_is_retrained_with_a_message(cache_copy, damage, reason, capsys):
    folder, trained = cache_copy
    damage(folder)
    quality.load_classifier(folder)
    out = capsys.readouterr()
    assert trained == [1] and reason in out.out and "Training the MNIST classifier" in out.out and out.err == ""
    quality._LOADED.clear()
    quality.load_classifier(folder)  # the rebuilt cache reads cleanly
    assert trained == [1]


def test_unwritable_cache_is_used_for_the_session(cache_copy, monkeypatch, capsys):
    folder, trained = cache_copy
    _missing(folder)

    def read_only(*args):
        raise PermissionError(13, "Permission denied", str(folder))

    monkeypatch.setattr(quality, "_write_cache", read_only)
    model, info = quality.load_classifier(folder)
    assert trained == [1] and "used for this session only" in capsys.readouterr().out
    assert quality.load_classifier(folder)[0] is model
