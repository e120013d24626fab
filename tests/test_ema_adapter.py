"""The EMA adapter (``EMAWeights.update_average``, docs/design.md "Dependencies' internals"): it stands in for torch's
``AveragedModel.update_parameters``, which reads its update count back to the host, inside Lightning's
``WeightAveraging``. These tests fail when the upstream internals it relies on change, or when the gap closes."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch.optim.swa_utils import AveragedModel
from torch.overrides import TorchFunctionMode

from mnist_lit.training.callbacks import EMAWeights


class Net(L.LightningModule):
    """Parameters and buffers of every kind EMAWeights averages: float weights, BatchNorm's running statistics and
    its integer ``num_batches_tracked``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                       torch.nn.Linear(4 * 26 * 26, 10))

    def train_a_step(self, generator: torch.Generator) -> None:  # weights and buffers move, as in a training step
        with torch.no_grad():
            self.net(torch.randn(8, 1, 28, 28, generator=generator))  # running stats, num_batches_tracked
            for p in self.parameters():
                p.add_(torch.randn(p.shape, generator=generator), alpha=0.1)


def trainer_at(step: int) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, state=SimpleNamespace(fn=TrainerFn.FITTING))


def test_averaged_model_still_reads_its_count_back_to_the_host():
    """The gap: ``AveragedModel.update_parameters`` turns its ``n_averaged`` tensor into a Python bool (twice a call),
    which on a GPU waits for every queued kernel. When this fails, upstream no longer syncs: drop the adapter."""

    class HostReads(TorchFunctionMode):
        reads = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in (torch.Tensor.__bool__, torch.Tensor.item, torch.Tensor.tolist):
                HostReads.reads += 1
            return func(*args, **(kwargs or {}))

    net = Net()
    average = AveragedModel(net, use_buffers=True, avg_fn=lambda a, c, n: c)
    with HostReads():
        average.update_parameters(net)
        average.update_parameters(net)
    assert HostReads.reads > 0


def test_the_adapter_updates_the_average_as_weight_averaging_does_bit_for_bit():
    """EMAWeights' own ``on_train_batch_end`` and update against Lightning's (``WeightAveraging.on_train_batch_end``
    with ``AveragedModel.update_parameters``), step by step: the same steps updated, the same ``AveragedModel``
    state (so the same checkpoint: ``module.*`` weights and ``n_averaged``), bit for bit. It relies on
    WeightAveraging keeping an ``AveragedModel`` in ``_average_model`` (parameters, then buffers, in the model's order,
    and its ``n_averaged`` buffer) and the last updated step in ``_latest_update_step``."""
    net, generator = Net(), torch.Generator().manual_seed(0)
    ours, theirs = EMAWeights(decay=0.6, update_starting_at_step=2), EMAWeights(decay=0.6, update_starting_at_step=2)
    for callback in (ours, theirs):
        callback.setup(trainer_at(0), net, "fit")
        assert isinstance(callback._average_model, AveragedModel) and callback._average_model.use_buffers
    for step in range(1, 40):  # the ramp (1 + n) / (10 + n) passes decay=0.6 at n = 13: both regimes
        net.train_a_step(generator)
        ours.on_train_batch_end(trainer_at(step), net, None, None, step - 1)
        WeightAveraging.on_train_batch_end(theirs, trainer_at(step), net, None, None, step - 1)
        assert ours.state_dict() == theirs.state_dict(), step
        mine, upstream = ours._average_model.state_dict(), theirs._average_model.state_dict()
        assert list(mine) == list(upstream) and "n_averaged" in mine
        assert all(torch.equal(mine[k], upstream[k]) for k in mine), step
    assert int(mine["n_averaged"]) == ours._updates == 37


def test_the_update_count_comes_back_with_a_checkpoint():
    """Resuming: the count on the host is the checkpoint's ``n_averaged``, so the next update's decay is the one an
    uninterrupted run would use."""
    net, generator = Net(), torch.Generator().manual_seed(0)
    first = EMAWeights(decay=0.9)
    first.setup(trainer_at(0), net, "fit")
    for step in range(1, 6):
        net.train_a_step(generator)
        first.on_train_batch_end(trainer_at(step), net, None, None, step - 1)
    checkpoint = {"state_dict": net.state_dict()}
    first.on_save_checkpoint(trainer_at(5), net, checkpoint)
    resumed = EMAWeights(decay=0.9)
    resumed.setup(trainer_at(0), Net(), "fit")
    resumed.on_load_checkpoint(trainer_at(5), net, checkpoint)
    assert resumed._updates == first._updates == 5
