"""The tutorials' networks as plain ``nn.Module``s, layer for layer; they know nothing of Lightning.

Each takes a normalized batch of shape (N, 1, 28, 28) and returns (N, 10) logits.
"""

from __future__ import annotations

from typing import Literal, get_args

from torch import nn


def _conv_stack(channels: list[int], kernel: int) -> list[nn.Module]:
    """``same``-padded conv + ReLU layers, so only pooling changes the 28×28 size."""
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels, channels[1:]):
        layers += [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2), nn.ReLU()]
    return layers


class LeNet5(nn.Module):
    """Tutorial seed 000: LeNet-5 with 28 filters in its second convolution."""

    def __init__(self, conv2_channels: int = 28) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, conv2_channels, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(conv2_channels * 4 * 4, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, 10),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class LeNet(LeNet5):
    """Tutorial seed 001: the textbook LeNet (16 filters in the second convolution)."""

    def __init__(self) -> None:
        super().__init__(conv2_channels=16)


class CNN3Block(nn.Module):
    """Tutorial seed 002: three blocks of ``same`` convolutions, two of them pooled, then one linear layer."""

    def __init__(self, kernel: int = 3, block1: tuple[int, ...] = (16,), block2: tuple[int, ...] = (16, 32, 32),
                 block3: tuple[int, ...] = (64, 64)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_stack([1, *block1], kernel), nn.MaxPool2d(2),
            *_conv_stack([block1[-1], *block2], kernel), nn.MaxPool2d(2),
            *_conv_stack([block2[-1], *block3], kernel),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(block3[-1] * 7 * 7, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


class CNN3Block5x5(CNN3Block):
    """Tutorial seed 002's deeper variant: 5×5 kernels and more filters."""

    def __init__(self) -> None:
        super().__init__(kernel=5, block1=(16,), block2=(32, 32, 32, 64, 64), block3=(64,))


class MLP(nn.Module):
    """Tutorial seed 003: 784-256-128-64-10 with ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 256), nn.ReLU(),
            nn.Linear(256, 128), nn.ReLU(),
            nn.Linear(128, 64), nn.ReLU(),
            nn.Linear(64, 10),
        )

    def forward(self, x):
        return self.layers(x)


class BNCNN(nn.Module):
    """Tutorial seed 004: two conv + BatchNorm blocks and a 1024-unit dropout head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * 7 * 7, 1024), nn.ReLU(), nn.Dropout(0.5), nn.Linear(1024, 10),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class FastCNN(nn.Module):
    """tuomaso/train_mnist_fast's network, the public record for 99 % in one epoch: two small convolutions and a
    256-unit head, 215k parameters. Pooling comes before each ReLU (the same result, on a quarter of the values)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 24, 5), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(24, 32, 3), nn.MaxPool2d(2), nn.ReLU(),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 5 * 5, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


class DeotteCNN(nn.Module):
    """Chris Deotte's Kaggle MNIST CNN, 32C3-32C3-32C5S2-64C3-64C3-64C5S2-128C4 with BatchNorm after each ReLU and
    dropout 0.4: 99.64 % mean as a single model in its public runs. Learnt 5×5 stride-2 convolutions take the place
    of pooling."""

    def __init__(self, dropout: float = 0.4) -> None:
        super().__init__()

        def conv(c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, kernel, stride, padding), nn.ReLU(), nn.BatchNorm2d(c_out)]

        self.features = nn.Sequential(
            *conv(1, 32, 3), *conv(32, 32, 3), *conv(32, 32, 5, 2, 2), nn.Dropout(dropout),  # 28 → 26 → 24 → 12
            *conv(32, 64, 3), *conv(64, 64, 3), *conv(64, 64, 5, 2, 2), nn.Dropout(dropout),  # 12 → 10 → 8 → 4
            *conv(64, 128, 4),  # 4 → 1
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(128, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


NetName = Literal["lenet5", "lenet", "cnn3block", "cnn3block5x5", "mlp", "bncnn", "fast", "best"]

NETS: dict[str, type[nn.Module]] = dict(
    zip(get_args(NetName), (LeNet5, LeNet, CNN3Block, CNN3Block5x5, MLP, BNCNN, FastCNN, DeotteCNN))
)


def build_net(name: str) -> nn.Module:
    if name not in NETS:
        raise ValueError(f"unknown network {name!r}; choose one of: {', '.join(NETS)}")
    return NETS[name]()
