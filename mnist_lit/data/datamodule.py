"""MNIST as a LightningDataModule: provisioning, a fixed train/val split, in-memory batches, augmentation, and
optionally outlier images ("none of these digits") beside every training batch.

Each split is kept as one uint8 tensor and a whole batch is fetched with one indexing operation; the model normalizes
the 0–255 pixels itself (its checkpoint carries how). Per-sample PIL transforms are what make the tutorials' loops slow.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeInt, PositiveInt
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler
from torchvision.datasets import MNIST

from mnist_lit.common.atomic_files import replaced_on_success
from mnist_lit.common.errors import UserError
from mnist_lit.data.augment import Augmentation
from mnist_lit.data.augment import augment as augment_batch
from mnist_lit.data.outliers import fashion_images, provision_fashion, synthetic_outliers
from mnist_lit.data.provision import OFFICIAL_PINS, Pin, provision

TRAIN_SIZE = 60_000
AUGMENT_STREAM, OUTLIER_STREAM = 0xA06, 0x0E7  # tags that keep the per-epoch random streams apart
VAL_AUGMENT_SEED = 0xA07  # the augmented copy of the validation split: the same distortions in every run and epoch


@dataclass
class Outliers:
    """Images that are no digit, for outlier exposure (``--model.outlier_weight``): the network learns to spread its
    probability evenly over the ten digits on them, so that a low top probability means "not a digit". Off by
    default (``fraction`` 0), which leaves a recipe's batches and random numbers exactly as without it.

    Training outliers: Fashion-MNIST's training split (``mnist_lit.data.outliers.provision_fashion``) and a pool of
    synthetic pen strokes, scribbles, doodles and handwritten and typed non-digit characters (``synthetic_outliers``),
    each read through ``predict-images``' preprocessing. Validation outliers, which choose the rejection threshold,
    are held out: Fashion-MNIST's test split and synthetic ones made with another seed.

    Args:
        fraction: outliers added to each training batch, as a fraction of ``--data.batch_size`` (0.25 with batch
            128: 32 more images per step); 0 = off. They are distorted by ``--data.augment`` as the digits are.
        fashion: put Fashion-MNIST's 60,000 training images in the training pool.
        synthetic: synthetic outliers in the training pool, made by the first run (kept in
            ``<data_dir>/outliers/``).
        val_fashion: Fashion-MNIST test images among the validation outliers.
        val_synthetic: synthetic validation outliers (made with seed ``seed`` + 1).
        seed: seed of the synthetic training pool.
        val_augment: distortions of the augmented copy of the validation split, which the rejection threshold
            must also accept (other writers and pens). Off (the default): ``--data.augment``'s; both off: no copy.
    """

    fraction: ClosedUnitInterval = 0.0
    fashion: bool = True
    synthetic: NonNegativeInt = 10_000
    val_fashion: NonNegativeInt = 2_000
    val_synthetic: NonNegativeInt = 2_000
    seed: int = 0
    val_augment: Augmentation = field(default_factory=Augmentation)

    @property
    def enabled(self) -> bool:
        return self.fraction > 0

    def count(self, batch_size: int) -> int:
        """Outliers per training batch: a fixed number, so every step has the same shapes."""
        return max(1, round(self.fraction * batch_size)) if self.enabled else 0


def _keep_batch(batch):
    """The dataset already returns a whole batch, so there is nothing to collate."""
    return batch


class InMemoryMNIST(Dataset):
    """A split held as two tensors; ``__getitems__`` lets a DataLoader fetch a batch with one index operation."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices)
        if self.images.is_cuda:  # from pinned memory, asynchronously: a plain copy would wait for the GPU every step
            index = index.pin_memory().to(self.images.device, non_blocking=True)
        return self.images[index], self.labels[index]


class EpochShuffle(RandomSampler):
    """A RandomSampler whose order depends only on the run's seed and the epoch, as DistributedSampler's does.

    The default sampler draws each epoch's order from the global random state, which a restarted process does not
    have: with this one, a run resumed from an epoch-end checkpoint sees the batches the uninterrupted run saw.
    Lightning calls ``set_epoch`` before every epoch (and swaps in a DistributedSampler, seeded the same way, under
    DDP).
    """

    def __init__(self, data_source: Dataset, seed: int) -> None:
        super().__init__(data_source, generator=torch.Generator())
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed + epoch)


class MNISTDataModule(L.LightningDataModule):
    """MNIST: 55,000 train / 5,000 validation from the official 60,000 (fixed split), plus the official test set."""

    pins: dict[str, Pin] = dict(OFFICIAL_PINS)  # tests may point this at tiny files they generate

    def __init__(
        self,
        data_dir: str = os.environ.get("MNIST_LIT_DATA_DIR", "data"),
        batch_size: PositiveInt = 64,
        val_size: PositiveInt = 5_000,
        split_seed: int = 0,
        eval_batch_size: PositiveInt = 1_000,
        num_workers: NonNegativeInt = 0,
        drop_last: bool = True,
        augment: Augmentation = Augmentation(),
        outliers: Outliers = Outliers(),
    ) -> None:
        """
        Args:
            data_dir: folder holding ``MNIST/raw`` (default: $MNIST_LIT_DATA_DIR, else ``data``).
            batch_size: training batch size.
            val_size: images of the official training set held out for validation.
            split_seed: seed of the train/validation split; the same seed gives the same split everywhere.
            eval_batch_size: batch size for validation, test and predict (it does not change any metric).
            num_workers: DataLoader worker processes; 0 is fastest, the data is already in memory.
            drop_last: skip each epoch's last, smaller training batch (24 images at the defaults). Its noisier
                step comes right before every evaluation: keeping it cost lenet's recipe 2.15 points of one-epoch
                test accuracy, on average over 16 seeds (docs/decisions.md). The skipped images differ every
                epoch.
            augment: per-sample random distortions of training batches, 0–255 pixels in and out, on the
                batch's device (``mnist_lit.data.augment``); off by default. Their random numbers depend only on the
                seed, the epoch and the rank, so ``fit --ckpt_path last`` replays an epoch exactly.
            outliers: non-digit images beside every training batch (which becomes ``(digits, labels, outliers)``),
                and held-out ones to validate on (see :class:`Outliers`); off by default. Which outliers a batch
                gets depends only on the seed, the epoch and the rank, as the augmentation does.
        """
        super().__init__()
        if val_size >= TRAIN_SIZE:
            raise UserError(f"--data.val_size {val_size} leaves no training images (MNIST has {TRAIN_SIZE:,})")
        if drop_last and batch_size > TRAIN_SIZE - val_size:
            raise UserError(f"--data.batch_size {batch_size} is more than the {TRAIN_SIZE - val_size:,} training "
                            f"images, and --data.drop_last would skip them all")
        if outliers.enabled and not (outliers.fashion or outliers.synthetic):
            raise UserError("--data.outliers.fraction needs outliers to train on: --data.outliers.fashion true or "
                            "--data.outliers.synthetic > 0")
        if outliers.enabled and not (outliers.val_fashion or outliers.val_synthetic):
            raise UserError("--data.outliers.fraction needs outliers to validate on: --data.outliers.val_fashion or "
                            "--data.outliers.val_synthetic > 0")
        self.augmentation, self.outliers = augment, outliers
        # hparams hold plain data: checkpoints are read with torch.load(weights_only=True)
        augment, outliers = asdict(augment), asdict(outliers)
        self.save_hyperparameters()
        self._augment_generator = torch.Generator()
        self._outlier_generator = torch.Generator()
        self._augment_epoch: int | None = None  # the epoch the generators were seeded for
        self.train_set: InMemoryMNIST | None = None
        self.val_set: InMemoryMNIST | None = None
        self.test_set: InMemoryMNIST | None = None
        self.outlier_pool: torch.Tensor | None = None  # uint8 (N, 28, 28) training outliers, on the batches' device
        self.val_augmented_set: InMemoryMNIST | None = None
        self.val_outlier_set: InMemoryMNIST | None = None

    @property
    def raw_dir(self) -> Path:
        return Path(self.hparams.data_dir) / "MNIST" / "raw"

    def prepare_data(self) -> None:
        source = provision(self.raw_dir, self.pins)
        rank_zero_info(f"MNIST: served by {source}")
        if self.outliers.enabled and (self.outliers.fashion or self.outliers.val_fashion):
            rank_zero_info(f"Fashion-MNIST (outliers): served by {provision_fashion(self.hparams.data_dir)}")
        if self.outliers.enabled and self.trainer is not None and self.trainer.state.fn in ("fit", "validate"):
            # made once per machine (local rank 0), so DDP's other ranks only read the files in setup()
            for n, seed in ((self.outliers.synthetic, self.outliers.seed),
                            (self.outliers.val_synthetic, self.outliers.seed + 1)):
                if n:
                    self._synthetic(n, seed)

    def setup(self, stage: str | None = None) -> None:
        self._augment_epoch = None  # a new fit (or a resumed one) reseeds at its first batch
        if self.train_set is None:
            self._setup_mnist()
        if self.outliers.enabled and stage in ("fit", "validate", None) and self.val_outlier_set is None:
            self._setup_outliers()

    def _setup_mnist(self) -> None:
        train = MNIST(self.hparams.data_dir, train=True)
        test = MNIST(self.hparams.data_dir, train=False)
        for split in (train, test):
            if split.data.shape[1:] != (28, 28) or len(split.targets) != len(split.data) or not (
                    0 <= int(split.targets.min()) and int(split.targets.max()) <= 9):
                raise UserError(f"{self.raw_dir}: the {'training' if split.train else 'test'} files are not "
                                f"28×28 digits labelled 0–9; delete them and run again to re-provision")
        # On a GPU the whole dataset (55 MB) lives in GPU memory: batches are sliced there, no copies per step.
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if device.type != "cuda":
            device = torch.device("cpu")
        order = torch.randperm(len(train.targets), generator=torch.Generator().manual_seed(self.hparams.split_seed))
        val_idx, train_idx = order[: self.hparams.val_size], order[self.hparams.val_size :]
        self.train_set = InMemoryMNIST(train.data[train_idx].to(device), train.targets[train_idx].to(device))
        self.val_set = InMemoryMNIST(train.data[val_idx].to(device), train.targets[val_idx].to(device))
        self.test_set = InMemoryMNIST(test.data.to(device), test.targets.to(device))

    def _setup_outliers(self) -> None:
        """The training pool and the held-out validation outliers, and the augmented copy of the validation split,
        on the device the MNIST splits are on."""
        cfg, data_dir, device = self.outliers, self.hparams.data_dir, self.val_set.images.device
        train = [fashion_images(data_dir, train=True)] if cfg.fashion else []
        val = [fashion_images(data_dir, train=False)[: cfg.val_fashion]] if cfg.val_fashion else []
        train += [self._synthetic(cfg.synthetic, seed=cfg.seed)] if cfg.synthetic else []
        val += [self._synthetic(cfg.val_synthetic, seed=cfg.seed + 1)] if cfg.val_synthetic else []
        self.outlier_pool = torch.cat(train).to(device)
        val_images = torch.cat(val).to(device)
        self.val_outlier_set = InMemoryMNIST(val_images, torch.full((len(val_images),), -1, device=device))
        distortions = cfg.val_augment if cfg.val_augment.enabled else self.augmentation
        if distortions.enabled:
            augmented = augment_batch(self.val_set.images, distortions, torch.Generator().manual_seed(VAL_AUGMENT_SEED))
            self.val_augmented_set = InMemoryMNIST(augmented, self.val_set.labels)

    def _synthetic(self, n: int, seed: int) -> torch.Tensor:
        """``synthetic_outliers(n, seed)``, kept in ``<data_dir>/outliers/`` after the first run: rendering and
        reading each one as predict-images would takes milliseconds, half a CPU minute for a pool, about ``fast``'s
        whole training, so every CPU makes a share (1,000 images at least). The file's name carries the
        generator's source digest, so a changed generator makes anew, and its older pools of the same size and seed
        (about 8 MB each) are deleted then."""
        digest = hashlib.sha256(Path(inspect.getsourcefile(synthetic_outliers)).read_bytes()).hexdigest()[:12]
        path = Path(self.hparams.data_dir) / "outliers" / f"synthetic-{n}-seed{seed}-{digest}.pt"
        try:
            images = torch.load(path, weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):  # missing or unreadable: made (again)
            images = None
        if isinstance(images, torch.Tensor) and images.shape == (n, 28, 28) and images.dtype == torch.uint8:
            return images
        images = synthetic_outliers(n, seed, workers=min(os.cpu_count() or 1, n // 1000))
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_on_success(path) as tmp:
            torch.save(images, tmp)
        for stale in path.parent.glob(f"synthetic-{n}-seed{seed}-*.pt"):
            if stale != path:
                stale.unlink(missing_ok=True)
        return images

    def _loader(self, dataset: InMemoryMNIST, batch_size: int, sampler: Sampler | None = None,
                drop_last: bool = False) -> DataLoader:
        workers = 0 if dataset.images.is_cuda else self.hparams.num_workers  # CUDA tensors stay in this process
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=_keep_batch,
                          num_workers=workers, persistent_workers=workers > 0, drop_last=drop_last)

    def train_dataloader(self) -> DataLoader:
        # the seed Lightning's seed_everything (LightningCLI's --seed_everything) set, as DistributedSampler reads it
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        return self._loader(self.train_set, self.hparams.batch_size, EpochShuffle(self.train_set, seed),
                            drop_last=self.hparams.drop_last)

    def _eval_loader(self, dataset: InMemoryMNIST) -> DataLoader:
        """Under DDP each rank scores its own share of the split and every image is scored exactly once.

        Lightning's default, a DistributedSampler, pads the shares to equal length with repeated images whenever the
        number of processes does not divide the split, and those would count twice in the split's accuracy and loss.
        Lightning keeps a distributed sampler it is given (whatever ``--trainer.use_distributed_sampler`` says), and
        uses this unrepeated one itself for ``predict``.
        """
        shard = self.trainer.distributed_sampler_kwargs if self.trainer is not None else None
        sampler = UnrepeatedDistributedSampler(dataset, shuffle=False, **shard) if shard else None
        return self._loader(dataset, self.hparams.eval_batch_size, sampler)

    def val_dataloader(self) -> list[DataLoader]:
        """The validation split and the official test set, so both are scored after every epoch. With outliers, two
        more that choose the rejection threshold: the validation outliers, then the augmented validation split
        (if there is one)."""
        sets = [self.val_set, self.test_set, self.val_outlier_set, self.val_augmented_set]
        return [self._eval_loader(s) for s in sets if s is not None]

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """A training batch gets its outliers (``(digits, labels, outliers)``, fixed sizes) and its distortions."""
        if self.trainer is None or not self.trainer.training:
            return batch
        images, labels = batch
        if self.outliers.enabled:
            outliers = self._draw_outliers()
            if self.augmentation.enabled:
                both = augment_batch(torch.cat([images, outliers]), self.augmentation, self._epoch_generators()[0])
                images, outliers = both.split([len(images), len(outliers)])
            return images, labels, outliers
        if self.augmentation.enabled:
            return augment_batch(images, self.augmentation, self._epoch_generators()[0]), labels
        return batch

    def _draw_outliers(self) -> torch.Tensor:
        """This step's outliers, drawn (with replacement) from the training pool by the epoch's outlier stream; the
        indices reach a GPU pinned and without waiting, as the digits' do (InMemoryMNIST.__getitems__)."""
        pool = self.outlier_pool
        index = torch.randint(len(pool), (self.outliers.count(self.hparams.batch_size),),
                              generator=self._epoch_generators()[1])
        if pool.is_cuda:
            index = index.pin_memory().to(pool.device, non_blocking=True)
        return pool[index]

    def _epoch_generators(self) -> tuple[torch.Generator, torch.Generator]:
        """The augmentation's and the outliers' random numbers: streams seeded from the run's seed, the epoch and the
        rank at each epoch's first batch, so a replayed epoch gets the same distortions and outliers (the global
        random state is untouched)."""
        epoch = self.trainer.current_epoch
        if epoch != self._augment_epoch:
            seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
            # streams apart from dropout's, which ResumableRun seeds with SeedSequence([seed, epoch])
            for generator, stream in ((self._augment_generator, AUGMENT_STREAM),
                                      (self._outlier_generator, OUTLIER_STREAM)):
                state = np.random.SeedSequence([seed, epoch, self.trainer.global_rank, stream]).generate_state(1)[0]
                generator.manual_seed(int(state))
            self._augment_epoch = epoch
        return self._augment_generator, self._outlier_generator
