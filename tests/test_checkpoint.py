"""A checkpoint alone rebuilds the right network with the same weights."""

from __future__ import annotations

import lightning as L
import torch

from mnist_lit.models.classifier import MNISTClassifier


def test_load_from_checkpoint_gives_identical_predictions(tiny_data, tmp_path):
    dm = tiny_data()
    model = MNISTClassifier(net="lenet", normalization="mnist", optimizer="sgd", lr=0.05)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=4, limit_val_batches=1, default_root_dir=tmp_path,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    path = trainer.checkpoint_callback.best_model_path
    assert path

    loaded = MNISTClassifier.load_from_checkpoint(path)
    assert type(loaded.net) is type(model.net) and loaded.hparams == model.hparams
    x, _ = dm.on_after_batch_transfer(next(iter(dm.test_dataloader())), 0)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
        assert torch.equal(loaded.predict_step((x,), 0)["digit"], model(x).argmax(1))
