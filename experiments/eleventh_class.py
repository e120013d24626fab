"""One-off experiment (issue 22): an eleventh "not a digit" output, against outlier exposure, on the fast recipe.

    python -m experiments.eleventh_class fit --seed_everything 0 [more fit options]   # the fast recipe, 11 outputs
    python -m experiments.eleventh_class bench --ckpt "fast, 11th class=PATH" --ckpt fast=PATH ... --out DIR

The network is the fast recipe's with an 11-way last layer; the loss is the cross-entropy of the digits plus
``outlier_weight`` times that of the outliers against class 10 (outlier exposure's place). The score is the top
digit's probability in the 11-way softmax, its threshold chosen by the recipe's own rule on the same validation
digits, augmented digits and outliers; ``bench`` is bench/reject.py unchanged, its Predictor reading 11-way
checkpoints. Its conclusion and the commit that held it: docs/decisions.md.
"""

import sys

import torch
from torch import nn

import bench.reject
from mnist_lit.data.normalization import normalize
from mnist_lit.inference.predictor import Predictor
from mnist_lit.models.checkpoint import read_checkpoint, recorded_normalization
from mnist_lit.models.classifier import MNISTClassifier
from mnist_lit.models.rejection import Rejection, recorded_rejection
from mnist_lit.training import cli

NOT_A_DIGIT = 10


class EleventhClass(MNISTClassifier):
    """The fast recipe's module with "not a digit" as an eleventh class; its outputs are the ten digits' log
    probabilities in the 11-way softmax, so accuracy is the digits' and the rule scores the 11-way top digit."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.net.classifier[-1] = nn.Linear(self.net.classifier[-1].in_features, 11)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).log_softmax(dim=1)[:, :NOT_A_DIGIT]

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        digits, labels, outliers = batch
        logits, outlier_logits = super().forward(torch.cat([digits, outliers])).split([len(digits), len(outliers)])
        self.accuracy["train_acc"].update(logits[:, :NOT_A_DIGIT], labels)
        losses = self.loss(logits, labels)
        self.mean_loss["train_loss"].update(losses.detach())
        others = torch.full((len(outliers),), NOT_A_DIGIT, device=outliers.device)
        return losses.mean() + self.hparams.outlier_weight * self.loss(outlier_logits, others).mean()

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx < 2:
            super().validation_step(batch, batch_idx, dataloader_idx)  # accuracy and loss of the ten digits
        # the rule's score: the top digit's 11-way probability (exp of the outputs, not their renormalised softmax)
        images = batch[0]
        self.scores[("val", "test", "val_outliers", "val_augmented")[dataloader_idx]].update(
            Rejection.scores(self(images).exp()))


class EleventhPredictor(Predictor):
    """bench/reject.py's Predictor: an 11-way checkpoint gives the ten digits' probabilities in the 11-way softmax
    (they sum to less than 1); any other checkpoint is read as usual."""

    @classmethod
    def from_checkpoint(cls, path, device="cpu", threshold=None) -> Predictor:
        checkpoint = read_checkpoint(path)
        state = checkpoint["state_dict"]
        if state["net.classifier.3.weight"].shape[0] != 11:
            return Predictor.from_checkpoint(path, device, threshold)
        net = EleventhClass(net="fast").net
        net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
        return cls(net.eval(), "fast", recorded_normalization(checkpoint), recorded_rejection(checkpoint))

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(normalize(images, self.normalization)).softmax(dim=1)[:, :NOT_A_DIGIT]


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "fit":
        cli.MNISTClassifier = EleventhClass
        sys.exit(cli.main(["fit", "--model", "fast", *args]))
    bench.reject.Predictor = EleventhPredictor
    sys.argv[1:] = args
    bench.reject.main()
