import gzip

import pytest
import torch

from reliable_saliency import data
from reliable_saliency.core import inputs


def test_cifar10_offline_copy(shared_data, isolated_cache):
    test = data.load_cifar10("test")
    assert test.images.shape == (10000, 3, 32, 32) and test.images.dtype == torch.uint8
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert "offline" in test.source and "JPEG" in test.source
    assert test.classes[0] == "airplane" and test.classes[9] == "truck"
    # second call comes from the tensor cache and is identical
    assert torch.equal(data.load_cifar10("test").images, test.images)
    assert any(isolated_cache.joinpath("datasets").iterdir())


def test_lossless_subset_matches_jpeg_copy_roughly(shared_data, isolated_cache):
    exact = data.load_cifar10_lossless()
    assert exact.images.shape == (300, 3, 32, 32) and exact.labels.max() <= 9
    assert exact.input_space is inputs.CIFAR10


def test_mnist_test_set(shared_data):
    mnist = data.load_mnist("test")
    assert mnist.images.shape == (10000, 1, 28, 28)
    assert mnist.labels[:5].tolist() == [7, 2, 1, 0, 4]  # the well-known first test labels


def test_mnist_train_images_missing_offline(shared_data):
    with pytest.raises(data.DatasetNotFoundError, match="download=True"):
        data.load_mnist("train")


def test_idx_reader_on_generated_file(tmp_path, monkeypatch):
    folder = tmp_path / "mnist"
    folder.mkdir()
    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    header = (0x0803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (3, 28, 28))
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.numpy().tobytes()))
    labels = bytes([5, 0, 9])
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress((0x0801).to_bytes(4, "big") + (3).to_bytes(4, "big") + labels))
    monkeypatch.setenv("RELIABLE_SALIENCY_DATA", str(tmp_path))
    mnist = data.load_mnist("test")
    assert torch.equal(mnist.images[:, 0], images) and mnist.labels.tolist() == [5, 0, 9]


def test_imagenet_samples_and_val(shared_data, isolated_cache):
    samples = data.load_imagenet("samples")
    assert samples.images.shape == (1000, 3, 224, 224)
    assert sorted(samples.labels.tolist()) == list(range(1000))  # one image per class
    val = data.load_imagenet("val-37")
    assert len(val) == 37 and len(val.classes) == 1000
    names = dict(data.imagenet_class_names())
    assert names["n01440764"] == "tench"


def test_loader_on_tiny_generated_folder(tiny_cifar_root, isolated_cache):
    train = data.load_cifar10("train")
    assert train.images.shape == (40, 3, 32, 32)
    assert torch.bincount(train.labels).tolist() == [4] * 10
    assert train.location == str(tiny_cifar_root / "cifar10-jpeg" / "train")
    assert str(tiny_cifar_root) not in train.source  # published: named by kind, never by path


def test_image_folder_resizes_mixed_sizes(tmp_path):
    from helpers import write_jpeg_folder

    write_jpeg_folder(tmp_path / "a", ["x"], 1, size=300)
    write_jpeg_folder(tmp_path / "a", ["y"], 1, size=260)
    images, labels, classes, _ = data.load_image_folder(tmp_path / "a", size=224)
    assert images.shape == (2, 3, 224, 224) and classes == ("x", "y") and labels.tolist() == [0, 1]
    with pytest.raises(ValueError, match="different shapes"):
        data.load_image_folder(tmp_path / "a")


def test_synthetic_boxes_and_masks_are_exact():
    shapes = data.make_synthetic(n=64, size=48, object_size=(10, 16), seed=3)
    assert shapes.images.shape == (64, 3, 48, 48) and set(shapes.labels.tolist()) <= {0, 1, 2, 3}
    for mask, box in zip(shapes.masks, shapes.boxes):
        y0, x0, y1, x1 = box.tolist()
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (y0, y1, x0, x1)  # tight box
        assert 10 <= y1 - y0 <= 16 and y1 - y0 == x1 - x0
    # squares fill their box; other shapes do not
    fill = shapes.masks.flatten(1).float().sum(1) / ((shapes.boxes[:, 2] - shapes.boxes[:, 0]) ** 2)
    assert torch.all(fill[shapes.labels == 0] == 1) and torch.all(fill[shapes.labels != 0] < 1)
    # deterministic in the seed
    assert torch.equal(data.make_synthetic(n=64, size=48, object_size=(10, 16), seed=3).images, shapes.images)


def test_sample_is_seeded_and_not_class_sorted(shared_data, isolated_cache):
    test = data.load_cifar10("test")
    a, b = test.sample(200, seed=1), test.sample(200, seed=1)
    assert torch.equal(a.labels, b.labels) and len(set(a.labels.tolist())) == 10
    with pytest.raises(ValueError, match="has 10000"):
        test.sample(10001)


def test_missing_data_root_names_the_variable(tmp_path, monkeypatch, isolated_cache):
    monkeypatch.setenv("RELIABLE_SALIENCY_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.load_cifar10("test")
    message = str(error.value)
    assert "RELIABLE_SALIENCY_DATA" in message and "cifar10-jpeg/test" in message and "download=True" in message


def test_unknown_dataset_and_split():
    with pytest.raises(KeyError, match="choose one of"):
        data.load_dataset("cifar100")
    with pytest.raises(ValueError, match="'train' or 'test'"):
        data.load_cifar10("validation")
