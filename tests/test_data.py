"""The data module: stable disjoint splits, batches that the recipe's normalization turns into torchvision's."""

from __future__ import annotations

import pytest
import torch
from torchvision import transforms
from torchvision.datasets import MNIST

from mnist_lit.data.normalization import NORMALIZATIONS, normalize


def test_splits_are_disjoint_and_stable(tiny_data):
    first = tiny_data(val_size=50)
    first.prepare_data()
    first.setup("fit")
    second = tiny_data(val_size=50)
    second.setup("fit")
    for a, b in ((first.train_set, second.train_set), (first.val_set, second.val_set)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert len(first.train_set) == 250 and len(first.val_set) == 50 and len(first.test_set) == 100
    train_rows = {bytes(x.numpy()) for x in first.train_set.images}
    assert not train_rows & {bytes(x.numpy()) for x in first.val_set.images}
    other_seed = tiny_data(val_size=50, split_seed=1)
    other_seed.setup("fit")
    assert not torch.equal(other_seed.val_set.labels, first.val_set.labels)


@pytest.mark.parametrize("normalization", list(NORMALIZATIONS))
def test_normalization_matches_the_tutorial_transforms(tiny_data, normalization):
    """The data module yields 0–255 pixels; the model's ``normalize`` makes of them what the tutorial's transforms
    make of the same images."""
    dm = tiny_data()
    dm.prepare_data()
    dm.setup("fit")
    mean, std = NORMALIZATIONS[normalization]
    reference = MNIST(dm.hparams.data_dir, train=False,
                      transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))]))
    images, labels = next(iter(dm.test_dataloader()))
    x, y = dm.on_after_batch_transfer((images, labels), 0)
    x = normalize(x, normalization)
    expected = torch.stack([reference[i][0] for i in range(len(x))])
    assert x.shape == (len(x), 1, 28, 28) and x.dtype == torch.float32
    torch.testing.assert_close(x, expected, rtol=1e-5, atol=1e-4)
    assert torch.equal(y, torch.tensor([reference[i][1] for i in range(len(y))]))


def test_x255_gives_raw_pixel_values():
    images = torch.tensor([[[0, 128, 255]]], dtype=torch.uint8)
    assert normalize(images, "x255").flatten().tolist() == pytest.approx([0.0, 128.0, 255.0])


@pytest.mark.parametrize("drop_last", [True, False])
def test_fast_path_yields_the_reference_batches_in_the_same_order(tiny_data, monkeypatch, drop_last):
    """Same seed → same images, labels and per-epoch order as torchvision's dataset + per-sample transforms, shuffled
    by a RandomSampler whose generator is seeded with seed + epoch (as DistributedSampler seeds its shuffle)."""
    seed = 5
    monkeypatch.setenv("PL_GLOBAL_SEED", str(seed))  # what seed_everything(5) (--seed_everything 5) sets
    dm = tiny_data(batch_size=16, drop_last=drop_last)
    dm.prepare_data()
    dm.setup("fit")
    mean, std = NORMALIZATIONS["mnist"]
    reference = MNIST(dm.hparams.data_dir, train=True,
                      transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))]))
    order = torch.randperm(len(reference), generator=torch.Generator().manual_seed(dm.hparams.split_seed))
    reference_train = torch.utils.data.Subset(reference, order[dm.hparams.val_size :].tolist())

    loader = dm.train_dataloader()
    epochs = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)  # as Lightning does before every epoch
        fast = [(normalize(x, "mnist"), y) for x, y in (dm.on_after_batch_transfer(batch, 0) for batch in loader)]
        shuffle = torch.utils.data.RandomSampler(reference_train, generator=torch.Generator().manual_seed(seed + epoch))
        slow = list(torch.utils.data.DataLoader(reference_train, batch_size=16, sampler=shuffle, drop_last=drop_last))
        assert len(fast) == len(slow) == (15 if drop_last else 16)  # 250 training images: 15 × 16 + 10
        for (x, y), (ref_x, ref_y) in zip(fast, slow):
            assert torch.equal(y, ref_y)
            torch.testing.assert_close(x, ref_x, rtol=1e-5, atol=1e-4)
        epochs.append(torch.cat([y for _, y in fast]))
    assert not torch.equal(epochs[0], epochs[1]), "each epoch has its own order"


def test_labels_out_of_range_are_refused_before_training(tmp_path):
    from mnist_lit.common.errors import UserError
    from mnist_lit.data.datamodule import MNISTDataModule
    from mnist_lit.data.provision import Pin, sha256_of, write_idx_set
    from tests.conftest import tiny_arrays

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (train_x, train_y), test = tiny_arrays()
    train_y[5] = 12
    write_idx_set(raw, (train_x, train_y), test)
    dm = MNISTDataModule(data_dir=str(tmp_path), val_size=50)
    dm.pins = {p.name: Pin(sha256_of(p), p.stat().st_size) for p in raw.iterdir()}
    dm.prepare_data()
    with pytest.raises(UserError, match="labelled 0–9"):
        dm.setup("fit")
