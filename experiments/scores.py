"""One-off: which score of the network's output separates digits from non-digits best, on validation data only?

    OMP_NUM_THREADS=1 python -m experiments.scores CKPT [CKPT ...]

For each checkpoint: the validation split, its augmented copy and the validation outliers (the data that chooses the
threshold in training), scored by the top softmax probability (today's rule), the energy (logsumexp of the logits;
Liu et al., NeurIPS 2020) and the top logit. Each score's threshold follows the recipe's rule (at most reject_digits
of the plain and reject_augmented of the augmented digits); what it then rejects of the outliers is the comparison.
"""

import sys
import typing
from dataclasses import fields, is_dataclass

import torch
import yaml

from mnist_lit.data.datamodule import MNISTDataModule, Outliers
from mnist_lit.data.augment import Augmentation
from mnist_lit.models.classifier import MNISTClassifier


def build(cls, data: dict):
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: build(hints[f.name], data[f.name]) if is_dataclass(hints[f.name]) else data[f.name]
                  for f in fields(cls) if f.name in data})


SCORES = {"max_softmax": lambda z: z.softmax(1).max(1).values, "energy": lambda z: z.logsumexp(1),
          "max_logit": lambda z: z.max(1).values}


def main() -> None:
    data = yaml.safe_load(open("configs/best.yaml"))["data"]
    dm = MNISTDataModule(data_dir="data", batch_size=data["batch_size"], augment=build(Augmentation, data["augment"]),
                         outliers=build(Outliers, data["outliers"]))
    dm.prepare_data()
    dm.setup("fit")
    n_fashion = dm.outliers.val_fashion
    sets = {"val": dm.val_set.images, "augmented": dm.val_augmented_set.images, "outliers": dm.val_outlier_set.images}
    for path in sys.argv[1:]:
        model = MNISTClassifier.load_from_checkpoint(path, map_location="cpu").eval()
        hp = model.hparams
        with torch.no_grad():
            logits = {k: torch.cat([model(x[i:i + 1000]) for i in range(0, len(x), 1000)]) for k, x in sets.items()}
        print(path)
        for name, score in SCORES.items():
            s = {k: score(v) for k, v in logits.items()}
            threshold = min(float(s["val"].sort().values[int(hp.reject_digits * len(s["val"]))]),
                            float(s["augmented"].sort().values[int(hp.reject_augmented * len(s["augmented"]))]))
            out = s["outliers"] < threshold
            # AUROC of digits (plain + augmented) against outliers
            digits = torch.cat([s["val"], s["augmented"]])
            auroc = float((digits[:, None] > s["outliers"][None, :]).float().mean())
            print(f"  {name:12s} threshold {threshold:9.4f}  digits rejected {float((s['val'] < threshold).float().mean()):.4f}"
                  f"  augmented {float((s['augmented'] < threshold).float().mean()):.4f}"
                  f"  outliers {float(out.float().mean()):.4f} (fashion {float(out[:n_fashion].float().mean()):.4f},"
                  f" synthetic {float(out[n_fashion:].float().mean()):.4f})  AUROC {auroc:.4f}")


if __name__ == "__main__":
    main()
