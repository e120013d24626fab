"""Batch augmentation: per sample, only on training batches, reproducible from the seed and the epoch, the digit kept
inside the 28×28 field, and off (bit for bit) in every recipe that does not ask for it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from torchvision.datasets import MNIST

import mnist_lit.data.augment as augment_module
from mnist_lit.common.errors import UserError
from mnist_lit.data.augment import Affine, Augmentation, Contrast, Elastic, Resolution, Stroke, augment
from mnist_lit.data.datamodule import EpochShuffle
from mnist_lit.data.normalization import normalize
from mnist_lit.models.classifier import MNISTClassifier

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def recipe_augmentation(recipe: str) -> Augmentation:
    """A recipe's augmentation, parsed from its YAML as LightningCLI parses it (the default where it names none)."""
    parser = ArgumentParser()
    parser.add_argument("--augment", type=Augmentation, default=Augmentation())
    data = yaml.safe_load((CONFIGS / f"{recipe}.yaml").read_text()).get("data", {})
    return parser.instantiate(parser.parse_object({"augment": data["augment"]} if "augment" in data else {})).augment


def best() -> Augmentation:
    return recipe_augmentation("best")


FAMILIES = {
    "affine": Augmentation(affine=Affine(rotation=15, scale=0.15, aspect=0.15, shear=15, translate=3)),
    "elastic": Augmentation(elastic=Elastic(alpha=2)),
    "stroke": Augmentation(stroke=Stroke(p=1)),
    "resolution": Augmentation(resolution=Resolution(p_low=1)),
    "blocky": Augmentation(resolution=Resolution(p_low=1, blocky=1)),
    "blur": Augmentation(resolution=Resolution(p_blur=1)),
    "contrast": Augmentation(contrast=Contrast(p=1, gamma=2)),
}


@pytest.fixture(scope="module")
def digits(mnist_dir) -> torch.Tensor:
    """512 real MNIST training digits, uint8 (512, 28, 28)."""
    return MNIST(mnist_dir, train=True).data[:512]


def test_the_recipe_is_what_the_yaml_says():
    cfg = best()
    assert cfg.enabled and cfg.affine.rotation > 0 and cfg.elastic.alpha > 0 and cfg.stroke.p > 0
    assert cfg.resolution.p_low > 0 and cfg.resolution.blocky > 0 and cfg.resolution.p_blur > 0 and cfg.contrast.p > 0


@pytest.mark.parametrize("family", [*FAMILIES, "best"])
def test_each_image_gets_its_own_distortion(digits, family):
    cfg = best() if family == "best" else FAMILIES[family]
    same = digits[7].expand(64, 28, 28)  # one digit, 64 times
    out = augment(same, cfg, torch.Generator().manual_seed(0))
    flat = out.flatten(1)
    differences = (flat[:, None] - flat[None]).abs().amax(dim=2) + torch.eye(64) * 255
    assert differences.min() > 0, "two copies of one image came out the same: parameters drawn per batch?"


def test_blocky_digits_keep_square_pixels(digits):
    """Enlarged with nearest-neighbour pixels their edges are steps, which bilinear enlargement smooths: more
    variation between neighbouring pixels (the same sizes and phases: the blocky draw comes after them)."""
    def variation(x: torch.Tensor) -> float:
        return float((x.diff(dim=-1).abs().mean() + x.diff(dim=-2).abs().mean()))

    smooth, blocky = (augment(digits, Augmentation(resolution=Resolution(p_low=1, low_min=12, low_max=14, blocky=b)),
                              torch.Generator().manual_seed(0)) for b in (0.0, 1.0))
    assert variation(blocky) > 1.1 * variation(smooth)


def test_the_device_path_makes_the_cpu_paths_images(digits, monkeypatch):
    """Off the CPU every distortion is computed for every digit and selected (fixed shapes); on it, gathered."""
    cfg = replace(best(), resolution=replace(best().resolution, p_low=0.5, blocky=0.5, p_blur=0.3))
    on_cpu = augment(digits, cfg, torch.Generator().manual_seed(1))
    monkeypatch.setattr(augment_module, "_fixed_shapes", lambda x: True)
    assert torch.allclose(augment(digits, cfg, torch.Generator().manual_seed(1)), on_cpu, atol=1e-3)


def test_the_same_seed_gives_the_same_batch_and_leaves_the_global_random_state_alone(digits):
    rng = torch.get_rng_state()
    one = augment(digits, best(), torch.Generator().manual_seed(3))
    two = augment(digits, best(), torch.Generator().manual_seed(3))
    other = augment(digits, best(), torch.Generator().manual_seed(4))
    assert torch.equal(torch.get_rng_state(), rng), "augmentation must not draw from torch's global generator"
    assert torch.equal(one, two)
    assert not torch.equal(one, other)


def test_the_digit_stays_inside_the_field(digits):
    strong = best()
    strong.affine = Affine(rotation=30, scale=0.3, aspect=0.3, shear=30, translate=10)
    strong.elastic = Elastic(alpha=3)
    ring = torch.ones(28, 28, dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    for cfg in (best(), strong):
        out = augment(digits, cfg, torch.Generator().manual_seed(0))[:, 0]
        # not even the faint edge of a coarse pixel: a pale pencil's curve would darken it
        assert out[:, ring].max() == 0, "ink reached the field's outer ring"
        assert (out.flatten(1).amax(dim=1) > 255 / 10).all(), "a digit vanished"
    assert out.shape == (512, 28, 28) and out.min() >= 0 and out.max() <= 255


class Batches(L.Callback):
    """Records every batch as the network sees it (after on_after_batch_transfer, normalized), by stage."""

    def __init__(self) -> None:
        self.seen: dict[str, list[torch.Tensor]] = {"train": [], "val": [], "test": [], "predict": []}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen["train"].append(normalize(batch[0], "mnist"))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if dataloader_idx == 0:
            self.seen["val"].append(normalize(batch[0], "mnist"))

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.seen["test"].append(normalize(batch[0], "mnist"))

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.seen["predict"].append(normalize(batch[0], "mnist"))


def run(tiny_data, tmp_path, augmentation: Augmentation, epochs: int = 2) -> tuple[Batches, object]:
    """A real fit (2 epochs of 3 steps), validate, test and predict on tiny data; the batches each stage saw."""
    L.seed_everything(5)
    data = tiny_data(batch_size=16, augment=augmentation)
    batches = Batches()
    trainer = L.Trainer(max_epochs=epochs, limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path,
                        callbacks=[batches])
    model = MNISTClassifier(net="lenet", normalization="mnist")
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)
    trainer.predict(model, datamodule=data)
    return batches, data


def clean_training_batches(data, epochs: int) -> list[torch.Tensor]:
    """The training batches without augmentation: the sampler's order (seed 5, per epoch), normalized."""
    out = []
    for epoch in range(epochs):
        sampler = EpochShuffle(data.train_set, 5)
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler))
        out += [normalize(data.train_set.images[order[i * 16:(i + 1) * 16]], "mnist") for i in range(3)]
    return out


def test_only_training_batches_are_augmented_and_off_changes_nothing(tiny_data, tmp_path, one_thread):
    plain, data = run(tiny_data, tmp_path / "off", Augmentation())
    clean = clean_training_batches(data, 2)
    assert all(torch.equal(a, b) for a, b in zip(plain.seen["train"], clean, strict=True)), \
        "augmentation off must leave training batches exactly as they were"

    augmented, data = run(tiny_data, tmp_path / "on", best())
    for a, b in zip(augmented.seen["train"], clean, strict=True):
        assert ((a - b).flatten(1).abs().amax(dim=1) > 0.1).all(), "every training image must be distorted"
    for stage, split in (("val", data.val_set), ("test", data.test_set), ("predict", data.test_set)):
        expected = normalize(split.images[:1000], "mnist")
        seen = augmented.seen[stage][0]
        assert torch.equal(seen, expected[: len(seen)]), f"{stage} batches must not be augmented"
        assert torch.equal(augmented.seen[stage][0], plain.seen[stage][0])

    again, _ = run(tiny_data, tmp_path / "again", best())
    assert all(torch.equal(a, b) for a, b in zip(again.seen["train"], augmented.seen["train"], strict=True)), \
        "the same seed must give the same augmented batches"
    first, second = augmented.seen["train"][:3], augmented.seen["train"][3:]
    assert not any(torch.equal(a, b) for a, b in zip(first, second)), "each epoch draws new distortions"


@pytest.mark.parametrize("recipe", sorted(p.stem for p in CONFIGS.glob("*.yaml") if p.stem != "best"))
def test_recipes_without_augmentation_keep_it_off(recipe):
    assert not recipe_augmentation(recipe).enabled


@pytest.mark.parametrize("bad", [lambda: Affine(scale=1.5), lambda: Resolution(low_min=20, low_max=12),
                                 lambda: Contrast(gamma=0.5)])
def test_impossible_ranges_are_one_line_errors(bad):
    with pytest.raises(UserError, match="^--data.augment"):
        bad()
