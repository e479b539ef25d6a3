"""skdsl/train/data.py: the synthetic source, the CIFAR reader, imagefolder, transforms, order."""

import pickle

import pytest
import torch

from skdsl.base.errors import SettingError
from skdsl.train import data as D

# -- synthetic ------------------------------------------------------------------------------------


def test_synthetic_images_are_a_function_of_seed_split_and_index():
    shapes = D.SyntheticShapes((32, 32), classes=10, length=50, seed=3)
    first, label = shapes[7]
    again, _ = D.SyntheticShapes((32, 32), classes=10, length=50, seed=3)[7]
    other_seed, _ = D.SyntheticShapes((32, 32), classes=10, length=50, seed=4)[7]
    other_split, _ = D.SyntheticShapes((32, 32), classes=10, length=50, seed=3, split=1)[7]
    assert first.shape == (3, 32, 32) and label == 7
    assert torch.equal(first, again)
    assert not torch.equal(first, other_seed) and not torch.equal(first, other_split)
    assert 0 <= float(first.min()) and float(first.max()) <= 1


def test_synthetic_batch_rendering_matches_one_at_a_time():
    shapes = D.SyntheticShapes((24, 40), classes=10, length=30, seed=0)
    images, labels = shapes.render(torch.arange(20))
    assert images.shape == (20, 3, 24, 40)
    for index in (0, 5, 19):
        assert torch.allclose(images[index], shapes[index][0])
    assert labels.tolist() == [i % 10 for i in range(20)]


def test_synthetic_scale_controls_the_object_size():
    shapes = D.SyntheticShapes((64, 64), classes=10, length=10, seed=1)
    disc = torch.tensor([0])  # label 0 is the disc
    small, _ = shapes.render(disc, scale=0.3)
    large, _ = shapes.render(disc, scale=0.9)
    background = small[0, :, 0, 0]  # a corner pixel (noise aside)

    def object_area(image):
        return ((image - background[:, None, None]).abs().amax(0) > 0.2).float().mean().item()

    # A disc of diameter s·64 covers π/4·s² of the image.
    assert object_area(small[0]) == pytest.approx(3.1416 / 4 * 0.3**2, abs=0.02)
    assert object_area(large[0]) == pytest.approx(3.1416 / 4 * 0.9**2, abs=0.05)


def test_synthetic_scale_range_bounds_the_drawn_sizes():
    shapes = D.SyntheticShapes((32, 32), classes=10, length=100, seed=0, scale_range=(0.5, 0.6))
    draws = torch.stack([shapes._draws(i) for i in range(100)])[:, 0]
    scales = 0.5 + 0.1 * draws
    assert 0.5 <= float(scales.min()) and float(scales.max()) <= 0.6


def test_synthetic_classes_beyond_the_patterns_use_hue_bands():
    shapes = D.SyntheticShapes((16, 16), classes=1000, length=2000, seed=0)
    image, label = shapes[1234]
    assert label == 234 and image.shape == (3, 16, 16)


def test_parse_source_reads_synthetic_options_and_checks_them():
    source = D.parse_source("synthetic:train=100,val=20,scale=0.2-0.5")
    assert (source.train_size, source.val_size, source.scale_range) == (100, 20, (0.2, 0.5))
    for bad in ("synthetic:train=0", "synthetic:scale=0.9-0.2", "synthetic:size=3",
                "synthetic:train=x"):
        with pytest.raises(SettingError) as error:
            D.parse_source(bad)
        assert error.value.code == "SK511" and bad in error.value.message


def test_parse_source_names_unknown_kinds_and_missing_directories(tmp_path):
    with pytest.raises(SettingError, match="unknown source 'cifar'") as error:
        D.parse_source("cifar:x")
    assert "cifar10" in error.value.hint
    with pytest.raises(SettingError, match="no directory"):
        D.parse_source(f"cifar10:{tmp_path / 'nowhere'}")
    with pytest.raises(SettingError, match="name the directory"):
        D.parse_source("imagefolder")


# -- CIFAR: a small directory in CIFAR's exact python pickle format ---------------------------------


def write_cifar(directory, kind="cifar10", per_file=6, protocol=2):
    """data_batch_1..5 and test_batch (or train and test), as the real files: dicts with bytes
    keys, b'data' a uint8 numpy array of N×3072 (R, G, B planes), labels a list of ints."""
    numpy = pytest.importorskip("numpy")
    rng = numpy.random.default_rng(0)
    key, classes, files = ((b"labels", 10, [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"])
                           if kind == "cifar10" else (b"fine_labels", 100, ["train", "test"]))
    directory.mkdir(parents=True, exist_ok=True)
    for name in files:
        batch = {b"batch_label": name.encode(),
                 key: [int(v) for v in rng.integers(0, classes, per_file)],
                 b"data": rng.integers(0, 256, (per_file, 3072), dtype=numpy.uint8),
                 b"filenames": [f"img{i}.png".encode() for i in range(per_file)]}
        if kind == "cifar100":
            batch[b"coarse_labels"] = [0] * per_file
        with open(directory / name, "wb") as file:
            pickle.dump(batch, file, protocol=protocol)
    return directory


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_reader_reads_the_pickled_batches(tmp_path, protocol):
    root = write_cifar(tmp_path / "cifar-10-batches-py", protocol=protocol)
    source = D.open_source(D.parse_source(f"cifar10:{tmp_path}"), (3, 32, 32), 10, seed=0)
    assert (source.classes, len(source.train), len(source.val)) == (10, 30, 6)
    images, labels = D.read_cifar_batch(root / "test_batch", b"labels", 10)
    assert images.dtype == torch.uint8 and images.shape == (6, 3, 32, 32)
    # The first 1024 bytes of a row are the red plane, row by row.
    with open(root / "test_batch", "rb") as file:
        raw = pickle.load(file, encoding="bytes")
    assert images[2, 0, 1, 5] == int(raw[b"data"][2][32 + 5])
    assert images[2, 2, 0, 0] == int(raw[b"data"][2][2048])
    assert labels.tolist() == raw[b"labels"]
    image, label = source.val[2]
    expected = (images[2].float() / 255 - torch.tensor(D.CIFAR_MEAN).view(3, 1, 1)) \
        / torch.tensor(D.CIFAR_STD).view(3, 1, 1)
    assert torch.allclose(image, expected) and label == labels[2]


def test_cifar100_reader_uses_fine_labels(tmp_path):
    write_cifar(tmp_path, kind="cifar100", per_file=8)
    source = D.open_source(D.parse_source(f"cifar100:{tmp_path}"), (3, 32, 32), 100, seed=0)
    assert (source.classes, len(source.train), len(source.val)) == (100, 8, 8)


def test_cifar_training_crop_and_flip_are_seeded_per_epoch(tmp_path):
    write_cifar(tmp_path)
    source = D.open_source(D.parse_source(f"cifar10:{tmp_path}"), (3, 32, 32), 10, seed=0)
    a, _ = source.train[(0, 3)]
    b, _ = source.train[(0, 3)]
    epochs = [source.train[(epoch, 3)][0] for epoch in range(1, 6)]
    assert a.shape == (3, 32, 32) and torch.equal(a, b)
    assert any(not torch.equal(a, other) for other in epochs)


def test_malformed_cifar_files_are_named(tmp_path):
    root = write_cifar(tmp_path)
    (root / "data_batch_3").write_bytes(b"\x80\x02not a pickle at all")
    with pytest.raises(D.DataError, match="data_batch_3") as error:
        D.open_source(D.parse_source(f"cifar10:{tmp_path}"), (3, 32, 32), 10, seed=0)
    assert error.value.code == "SK512"
    with open(root / "data_batch_3", "wb") as file:
        pickle.dump({b"data": [1, 2, 3], b"labels": [0]}, file)
    with pytest.raises(D.DataError, match="data_batch_3.*uint8 array of N×3072"):
        D.open_source(D.parse_source(f"cifar10:{tmp_path}"), (3, 32, 32), 10, seed=0)
    (root / "data_batch_3").unlink()
    with pytest.raises(D.DataError, match="no CIFAR batch file .*data_batch_3"):
        D.open_source(D.parse_source(f"cifar10:{tmp_path}"), (3, 32, 32), 10, seed=0)


def test_cifar_pickles_cannot_run_code(tmp_path):
    root = write_cifar(tmp_path)

    class Exploit:
        def __reduce__(self):
            return (print, ("this must never run",))

    with open(root / "test_batch", "wb") as file:
        pickle.dump({b"data": Exploit(), b"labels": []}, file)
    with pytest.raises(D.DataError, match="test_batch.*builtins.print"):
        D.read_cifar_batch(root / "test_batch", b"labels", 10)


def test_cifar_needs_a_32x32_spec(tmp_path):
    write_cifar(tmp_path)
    with pytest.raises(SettingError, match="32×32"):
        D.open_source(D.parse_source(f"cifar10:{tmp_path}"), (3, 64, 64), 10, seed=0)


# -- imagefolder ----------------------------------------------------------------------------------


def write_imagefolder(root, sizes=((40, 30), (25, 50))):
    Image = pytest.importorskip("PIL.Image")
    for split in ("train", "val"):
        for label, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index, (width, height) in enumerate(sizes):
                colour = (200 * label, 50 + 40 * index, 90)
                Image.new("RGB", (width, height), colour).save(folder / f"{index}.png")
    return root


def test_imagefolder_crops_and_normalises(tmp_path):
    write_imagefolder(tmp_path)
    source = D.open_source(D.parse_source(f"imagefolder:{tmp_path}"), (3, 16, 16), 2, seed=0)
    assert (source.classes, len(source.train), len(source.val)) == (2, 4, 4)
    train_image, label = source.train[(0, 3)]
    val_image, _ = source.val[3]
    assert train_image.shape == val_image.shape == (3, 16, 16) and label == 1
    # A flat colour stays that colour through crop and resize: only normalisation changes it.
    expected = (torch.tensor([200, 90, 90]) / 255 - torch.tensor(D.IMAGENET_MEAN)) \
        / torch.tensor(D.IMAGENET_STD)
    assert torch.allclose(val_image[:, 8, 8], expected, atol=1e-4)


def test_broken_images_are_named(tmp_path):
    write_imagefolder(tmp_path)
    broken = tmp_path / "val" / "dog" / "9.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    source = D.open_source(D.parse_source(f"imagefolder:{tmp_path}"), (3, 16, 16), 2, seed=0)
    with pytest.raises(D.DataError, match="cannot decode image .*9.png"):
        _ = [source.val[i] for i in range(len(source.val))]


def test_a_broken_image_in_a_loader_worker_is_reported_without_its_traceback(tmp_path):
    write_imagefolder(tmp_path)
    (tmp_path / "val" / "dog" / "0.png").write_bytes(b"junk")
    source = D.open_source(D.parse_source(f"imagefolder:{tmp_path}"), (3, 16, 16), 2, seed=0)
    loader = D.make_loader(source.val, 2, list(range(len(source.val))), workers=1,
                           pin_memory=False, drop_last=False)
    with pytest.raises(D.DataError) as caught:
        list(loader)
    error = D.unwrap_worker_error(caught.value)
    assert error.message.startswith("cannot decode image") and "0.png" in error.message
    assert "Traceback" not in error.message


def test_imagefolder_layout_mistakes(tmp_path):
    pytest.importorskip("PIL")
    (tmp_path / "train").mkdir()
    with pytest.raises(D.DataError, match="no class folders"):
        D.open_source(D.parse_source(f"imagefolder:{tmp_path}"), (3, 16, 16), 2, seed=0)


# -- transforms and order -------------------------------------------------------------------------


def test_random_resized_crop_and_resize_shapes():
    image = torch.rand(3, 50, 70)
    generator = torch.Generator().manual_seed(0)
    assert D.random_resized_crop(image, (24, 24), (0.08, 1), generator).shape == (3, 24, 24)
    assert D.resize_shorter_side(image, 20).shape == (3, 20, 28)
    assert D.center_crop(image, (10, 12)).shape == (3, 10, 12)
    padded = D.random_crop_padded(image, 4, generator)
    assert padded.shape == image.shape


def test_epoch_sampler_shards_one_global_order():
    """Two processes' batches, side by side, are the one-process global batches."""
    split = D.Split(list(range(103)), lambda image, generator: image)
    whole = D.EpochSampler(split, rank=0, world_size=1, seed=5)
    halves = [D.EpochSampler(split, rank=r, world_size=2, seed=5) for r in range(2)]
    for sampler in (whole, *halves):
        sampler.set_epoch(2)
    order = [index for _, index in whole]
    shards = [[index for _, index in sampler] for sampler in halves]
    batch = 4  # per process; the global batch is 8
    for step in range(len(shards[0]) // batch):
        together = sorted(shards[0][step * batch:(step + 1) * batch] +
                          shards[1][step * batch:(step + 1) * batch])
        assert together == sorted(order[step * 2 * batch:(step + 1) * 2 * batch])
    resumed = D.EpochSampler(split, rank=0, world_size=1, seed=5)
    resumed.set_epoch(2, start=40)
    assert [index for _, index in resumed] == order[40:]
    assert all(epoch == 2 for epoch, _ in resumed)


def test_shard_indices_cover_every_image_once():
    shards = [D.shard_indices(10, rank, 3) for rank in range(3)]
    assert sorted(sum(shards, [])) == list(range(10))
