"""Datasets as uint8 tensors: CIFAR-10, MNIST, ImageNet samples, and a synthetic set with boxes.

The data root is ``$RELIABLE_SALIENCY_DATA`` (default ``~/.cache/reliable_saliency/data``). Each
loader looks there for the official files first (torchvision layout; ``download=True`` fetches
them), then for the offline copies described in ``../shared/data/README.md``. Decoded tensors are
cached once under :func:`experiment.cache_dir`. Every :class:`ImageSet` records its ``source``.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .core import inputs
from .core.experiment import atomic_torch_save, cache_dir
from .core.inputs import InputSpace

__all__ = [
    "DATA_ENV",
    "ImageSet",
    "data_root",
    "load_dataset",
    "locate",
    "load_cifar10",
    "load_cifar10_lossless",
    "load_mnist",
    "load_imagenet",
    "imagenet_class_names",
    "make_synthetic",
    "load_image_folder",
    "DatasetNotFoundError",
]

DATA_ENV = "RELIABLE_SALIENCY_DATA"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SYNTHETIC_CLASSES = ("square", "disk", "triangle", "cross")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is neither in the official layout nor in the offline layout under the data root."""


@dataclass
class ImageSet:
    """uint8 images (N, C, H, W), int64 labels (N,), class names, their ``source`` named by kind
    (never by a machine's path, so it can be published), the folder they were read from
    (``location``, for debugging on this machine), and the input space models trained on them
    use. ``boxes`` (N, 4) as (y0, x0, y1, x1), end-exclusive,
    and ``masks`` (N, H, W) mark ground-truth relevant pixels where known (synthetic data)."""

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]
    source: str
    input_space: InputSpace
    boxes: Tensor | None = None
    masks: Tensor | None = None
    extras: dict = field(default_factory=dict)
    location: str = ""

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels shape {tuple(self.labels.shape)} does not match {self.images.shape[0]} images")

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index) -> ImageSet:
        """The images at ``index`` (a slice, a LongTensor or a list of ints)."""
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return ImageSet(pick(self.images), pick(self.labels), self.classes, self.source,
                        self.input_space, pick(self.boxes), pick(self.masks), dict(self.extras), self.location)

    def sample(self, n: int, seed: int = 0) -> ImageSet:
        """``n`` images drawn without replacement by a seeded permutation (class-balanced in
        expectation; offline folders are sorted by class, so never take the first ``n``)."""
        if not 1 <= n <= len(self):
            raise ValueError(f"asked for {n} images but the set has {len(self)}")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return self.subset(order)

    def normalized(self, device=None) -> Tensor:
        """Float model input in this set's input space."""
        return self.input_space.normalize(self.images.to(device))


def data_root() -> Path:
    return Path(os.environ.get(DATA_ENV, Path.home() / ".cache" / "reliable_saliency" / "data")).expanduser()


def _not_found(name: str, root: Path, layouts: list[str], download: str) -> DatasetNotFoundError:
    lines = "\n".join(f"  - {root / layout}" for layout in layouts)
    return DatasetNotFoundError(
        f"{name} not found under the data root {root} (set by ${DATA_ENV}). Expected one of:\n{lines}\n"
        f"{download}"
    )


def _cached(key: str, build):
    """Load ``key`` from the tensor cache, or build it and cache it atomically."""
    path = cache_dir("datasets") / f"{key}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # a damaged cache file is rebuilt, never trusted
            path.unlink(missing_ok=True)
    value = build()
    atomic_torch_save(value, path)
    return value


def _decode_jpegs(paths: list[Path]) -> Tensor:
    import torchvision.io as io

    raw = [io.read_file(str(p)) for p in paths]
    decoded = []
    for start in range(0, len(raw), 4096):
        decoded.extend(io.decode_jpeg(raw[start:start + 4096], mode=io.ImageReadMode.RGB))
    return decoded


def load_image_folder(folder: Path, size: int | None = None, extensions=(".jpg", ".jpeg", ".png")):
    """An ImageFolder-layout directory -> (uint8 images (N, 3, H, W), labels, sorted class names).

    Images of different sizes are resized (shorter side ``round(size * 256 / 224)``) and centre
    cropped to ``size``; without ``size`` they must all have the same shape.
    """
    folder = Path(folder)
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise DatasetNotFoundError(f"no class sub-folders in {folder} (expected <folder>/<class>/<image>)")
    paths, labels = [], []
    for index, name in enumerate(classes):
        files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in extensions)
        paths += files
        labels += [index] * len(files)
    if not paths:
        raise DatasetNotFoundError(f"no images with extensions {extensions} under {folder}")
    images = _decode_jpegs(paths) if all(p.suffix.lower() != ".png" for p in paths) else _read_any(paths)
    if size is not None:
        images = [_resize_center_crop(img, size) for img in images]
    shapes = {tuple(img.shape) for img in images}
    if len(shapes) != 1:
        raise ValueError(f"images in {folder} have different shapes {sorted(shapes)[:3]}; pass size=")
    return torch.stack(images), torch.tensor(labels, dtype=torch.long), tuple(classes), paths


def _read_any(paths):
    import torchvision.io as io

    return [io.decode_image(str(p), mode=io.ImageReadMode.RGB) for p in paths]


def _resize_center_crop(img: Tensor, size: int) -> Tensor:
    """Resize the shorter side to round(size * 256/224) (bilinear, antialiased), centre crop ``size``."""
    short = round(size * 256 / 224)
    h, w = img.shape[-2:]
    scale = short / min(h, w)
    new_h, new_w = max(short, round(h * scale)), max(short, round(w * scale))
    if (new_h, new_w) != (h, w):
        img = F.interpolate(img[None].float(), size=(new_h, new_w), mode="bilinear", antialias=True,
                            align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return img[:, top:top + size, left:left + size].contiguous()


# ----------------------------------------------------------------------------------------- CIFAR-10
def locate(dataset: str, split: str) -> tuple[str, Path]:
    """Where ``dataset`` ("cifar10" or "mnist") ``split`` would be read from, without reading it:
    ``("official", folder)`` or ``("offline-jpeg", folder)`` (CIFAR-10 only). Raises if neither exists."""
    if split not in ("train", "test"):
        raise ValueError(f"{dataset} split must be 'train' or 'test', got {split!r}")
    root = data_root()
    if dataset == "cifar10":
        official, jpeg = root / "cifar-10-batches-py", root / "cifar10-jpeg" / split
        if official.is_dir():
            return "official", official
        if jpeg.is_dir():
            return "offline-jpeg", jpeg
        raise _not_found(
            "CIFAR-10", root, ["cifar-10-batches-py/ (official python batches)", f"cifar10-jpeg/{split}/<class>/*.jpg"],
            "Pass download=True (needs internet) or point the variable at a folder with the offline copy.",
        )
    if dataset == "mnist":
        prefix = "train" if split == "train" else "t10k"
        for folder in (root / "mnist", root / "MNIST" / "raw"):
            if all((folder / f"{prefix}-{kind}-idx{d}-ubyte.gz").exists() for kind, d in (("images", 3), ("labels", 1))):
                return "official", folder
        raise _not_found(
            f"MNIST {split}", root, [f"mnist/{prefix}-images-idx3-ubyte.gz", f"MNIST/raw/{prefix}-images-idx3-ubyte.gz"],
            "Pass download=True (needs internet). The offline data holds only the MNIST test images.",
        )
    raise KeyError(f"locate knows 'cifar10' and 'mnist', not {dataset!r}")


def load_cifar10(split: str = "test", download: bool = False) -> ImageSet:
    """CIFAR-10 ``train`` (50,000) or ``test`` (10,000).

    Official batches (``<root>/cifar-10-batches-py``, fetched by ``download=True``) are preferred;
    offline, the JPEG ImageFolder copy ``<root>/cifar10-jpeg/<split>`` (not bit-identical: JPEG
    quality about 75) is used, and the ``source`` says so.
    """
    root = data_root()
    if download and not (root / "cifar-10-batches-py").is_dir():
        import torchvision

        torchvision.datasets.CIFAR10(str(root), train=split == "train", download=True)
    kind, folder = locate("cifar10", split)
    if kind == "official":
        import torchvision

        dataset = torchvision.datasets.CIFAR10(str(root), train=split == "train", download=False)
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor(dataset.targets, dtype=torch.long)
        return ImageSet(images, labels, CIFAR10_CLASSES, f"official CIFAR-10 {split}", inputs.CIFAR10,
                        location=str(folder))

    def build():
        images, labels, classes, _ = load_image_folder(folder)
        if classes != CIFAR10_CLASSES:
            raise ValueError(f"{folder} has class folders {classes}, expected {CIFAR10_CLASSES}")
        return {"images": images, "labels": labels}

    count = sum(1 for _ in folder.rglob("*.jpg"))
    data = _cached(f"cifar10-jpeg-{split}-{count}", build)
    source = f"offline CIFAR-10 JPEG copy {split} (JPEG quality ~75, not bit-identical)"
    return ImageSet(data["images"], data["labels"], CIFAR10_CLASSES, source, inputs.CIFAR10, location=str(folder))


def load_cifar10_lossless() -> ImageSet:
    """The 300 exact-pixel CIFAR-10 test images of the offline data (``cifar10-test-lossless-300.npz``)."""
    path = data_root() / "cifar10-test-lossless-300.npz"
    if not path.exists():
        raise _not_found("The lossless CIFAR-10 subset", data_root(), [path.name], "It ships only with the offline data.")
    with np.load(path) as archive:
        images = torch.from_numpy(archive["x"]).permute(0, 3, 1, 2).contiguous()
        labels = torch.from_numpy(archive["y"]).long()
    return ImageSet(images, labels, CIFAR10_CLASSES, "lossless CIFAR-10 test subset (300 exact images)",
                    inputs.CIFAR10, location=str(path))


# ------------------------------------------------------------------------------------------- MNIST
def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {magic:#x})")
    dims = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_mnist(split: str = "test", download: bool = False) -> ImageSet:
    """MNIST as (N, 1, 28, 28) uint8 from the official IDX files (``<root>/mnist/`` or torchvision's
    ``<root>/MNIST/raw/``). Offline only the test images exist; ``download=True`` fetches both."""
    if download:
        import torchvision

        torchvision.datasets.MNIST(str(data_root()), train=split == "train", download=True)
    _, folder = locate("mnist", split)
    prefix = "train" if split == "train" else "t10k"
    x = torch.from_numpy(_read_idx(folder / f"{prefix}-images-idx3-ubyte.gz").copy())[:, None]
    y = torch.from_numpy(_read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64))
    classes = tuple(str(i) for i in range(10))
    return ImageSet(x, y, classes, f"official MNIST {split}", inputs.MNIST, location=str(folder))


# ---------------------------------------------------------------------------------------- ImageNet
def imagenet_class_names() -> list[tuple[str, str]]:
    """The 1,000 (wnid, name) pairs in standard class-index order, from ``imagenet-classes.tsv``."""
    path = data_root() / "imagenet-classes.tsv"
    if not path.exists():
        raise _not_found("imagenet-classes.tsv", data_root(), [path.name], "It ships with the offline data.")
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    return [(wnid, name) for _, wnid, name in sorted(rows, key=lambda r: int(r[0]))]


def load_imagenet(which: str = "samples", size: int = 224) -> ImageSet:
    """ImageNet images resized (shorter side 256) and centre-cropped to 224, labels by standard index.

    ``which="samples"``: 1,000 images, one per class (``imagenet-samples/``); ``"val-37"``: 37 genuine
    ILSVRC2012 validation images (``imagenet-val-37/``). Input space: :data:`inputs.IMAGENET`
    (use ``inputs.EFFICIENTNET_LITE`` for the offline EfficientNet-Lite0).
    """
    folders = {"samples": "imagenet-samples", "val-37": "imagenet-val-37"}
    if which not in folders:
        raise ValueError(f"which must be one of {list(folders)}, got {which!r}")
    folder = data_root() / folders[which]
    if not folder.is_dir():
        raise _not_found(f"ImageNet {which}", data_root(), [f"{folders[which]}/<wnid>/*.JPEG"],
                         "ImageNet cannot be downloaded automatically; use the offline sample folders.")
    names = imagenet_class_names()
    index_of = {wnid: i for i, (wnid, _) in enumerate(names)}

    def build():
        images, labels, wnids, _ = load_image_folder(folder, size=size)
        unknown = [w for w in wnids if w not in index_of]
        if unknown:
            raise ValueError(f"{folder} has folders that are not ImageNet wnids: {unknown[:5]}")
        standard = torch.tensor([index_of[w] for w in wnids])[labels]
        return {"images": images, "labels": standard}

    count = sum(1 for _ in folder.rglob("*.JPEG"))
    data = _cached(f"imagenet-{which}-{size}-{count}", build)
    classes = tuple(name for _, name in names)
    return ImageSet(data["images"], data["labels"], classes, f"ImageNet {which} (offline copy)", inputs.IMAGENET,
                    location=str(folder))


# --------------------------------------------------------------------------------------- synthetic
def _smooth_noise(n: int, size: int, cells: int, generator: torch.Generator) -> Tensor:
    coarse = torch.rand((n, 3, cells, cells), generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def _shape_mask(kind: int, size: int) -> Tensor:
    """Boolean (size, size) silhouette of a square, disk, triangle or cross filling its box."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = (size - 1) / 2
    if kind == 0:
        return torch.ones(size, size, dtype=torch.bool)
    if kind == 1:
        return (ys - c) ** 2 + (xs - c) ** 2 <= (size / 2) ** 2
    if kind == 2:
        return (xs - c).abs() <= ys / 2 + 0.5
    bar = size // 3
    band = lambda t: (t >= (size - bar) // 2) & (t < (size - bar) // 2 + bar)  # noqa: E731
    return band(ys) | band(xs)


def make_synthetic(n: int = 1000, size: int = 64, object_size: tuple[int, int] = (12, 20), seed: int = 0) -> ImageSet:
    """Shapes (square, disk, triangle, cross; the label) pasted at random places on textured canvases.

    The object's pixels are the only ones that carry the label: ``masks`` marks them exactly and
    ``boxes`` gives their box, for pointing-game and IoU checks. The canvas is smooth colour noise
    plus a distractor texture that carries no class information.
    """
    low, high = object_size
    if not (1 <= low <= high <= size):
        raise ValueError(f"object_size {object_size} must satisfy 1 <= low <= high <= size={size}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    generator = torch.Generator().manual_seed(seed)
    canvas = 0.6 * _smooth_noise(n, size, 6, generator) + 0.4 * _smooth_noise(n, size, 16, generator)
    labels = torch.randint(0, len(SYNTHETIC_CLASSES), (n,), generator=generator)
    sizes = torch.randint(low, high + 1, (n,), generator=generator)
    colours = torch.rand((n, 3), generator=generator) * 0.5 + torch.where(
        torch.rand((n, 1), generator=generator) < 0.5, 0.0, 0.5)
    boxes = torch.zeros((n, 4), dtype=torch.long)
    masks = torch.zeros((n, size, size), dtype=torch.bool)
    for i in range(n):
        s = int(sizes[i])
        y0 = int(torch.randint(0, size - s + 1, (1,), generator=generator))
        x0 = int(torch.randint(0, size - s + 1, (1,), generator=generator))
        masks[i, y0:y0 + s, x0:x0 + s] = _shape_mask(int(labels[i]), s)
        boxes[i] = torch.tensor([y0, x0, y0 + s, x0 + s])
    images = torch.where(masks[:, None], colours[:, :, None, None], canvas)
    images = (images * 255).round().clamp(0, 255).to(torch.uint8)
    source = f"synthetic shapes (n={n}, size={size}, object {low}-{high} px, seed={seed})"
    return ImageSet(images, labels, SYNTHETIC_CLASSES, source, inputs.SYNTHETIC, boxes=boxes, masks=masks)


# -------------------------------------------------------------------------------------- by name
LOADERS = {
    "cifar10": load_cifar10,
    "cifar10-lossless": load_cifar10_lossless,
    "mnist": load_mnist,
    "imagenet": load_imagenet,
    "synthetic": make_synthetic,
}


def load_dataset(name: str, **options) -> ImageSet:
    """Load a dataset by name (``cifar10``, ``cifar10-lossless``, ``mnist``, ``imagenet``, ``synthetic``)."""
    if name not in LOADERS:
        raise KeyError(f"unknown dataset {name!r}; choose one of {sorted(LOADERS)}")
    return LOADERS[name](**options)
