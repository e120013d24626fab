"""Every tutorial network: its shape, its parameter count, and one real training step through Lightning."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from mnist_lit.models.classifier import MNISTClassifier
from mnist_lit.models.nets import NETS, build_net

PARAMS = {"lenet5": 69_278, "lenet": 44_426, "cnn3block": 103_162, "cnn3block5x5": 352_074, "mlp": 242_762,
          "bncnn": 6_508_682, "fast": 215_194, "best": 326_410}


def test_every_network_has_its_table_entry():
    assert set(PARAMS) == set(NETS)


@pytest.mark.parametrize("name", list(PARAMS))
def test_shape_and_parameter_count(name):
    net = build_net(name)
    assert sum(p.numel() for p in net.parameters()) == PARAMS[name]
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("name", list(PARAMS))
def test_fast_dev_run_fit(name, tiny_data, tmp_path):
    model = MNISTClassifier(net=name)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = L.Trainer(fast_dev_run=True, default_root_dir=tmp_path, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(model, datamodule=tiny_data())
    assert trainer.state.finished
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), "one step must change weights"


def test_unknown_network_is_a_clear_error():
    with pytest.raises(ValueError, match="choose one of: lenet5"):
        build_net("resnet")
