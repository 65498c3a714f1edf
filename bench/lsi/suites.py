"""The LSI suites: a second kind of suite, comparing training-time augmentations of ONE
supervised classifier (the suite's backbone + a linear head) rather than SSL methods.

Rows (`ROWS`), each the same classifier on the same budget, scored on test top-1:

- `none`: the clean, un-augmented images;
- `standard`: the suite's augmentation pipeline (bench/engine/augment.py, the suite's AugConfig);
- `mixup`: standard, then pixel mixup (Zhang et al. 2018; Beta(alpha, alpha), one lambda per batch);
- `lsi-uniform`: standard, then latent space interpolation (Liu et al. 2018) with the
  uniform-prior AAE (methods/aae.py as it is);
- `lsi-gaussian`: the same with a Gaussian-prior AAE (`aae.prior=gaussian`: the "holes" ablation);
- `lsi-vae`: the same with the VAE (methods/vae.py, KL weight `lsi.vae_kl_coeff`), interpolating posterior means.

The suite types reuse `bench.config`'s TrainConfig and AugConfig; what is new is `LSIConfig`
(the augmentation protocol) and `LSISuite`. docs/protocols.md §6 states every choice.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from bench.config import AugConfig, TrainConfig
from bench.registry import Registry

ROWS = ("none", "standard", "mixup", "lsi-uniform", "lsi-gaussian", "lsi-vae")
# row -> the generator it decodes with (None: no generator)
ROW_GENERATOR = {"none": None, "standard": None, "mixup": None,
                 "lsi-uniform": "aae-uniform", "lsi-gaussian": "aae-gaussian", "lsi-vae": "vae"}
ROW_TITLES = {"none": "no augmentation", "standard": "standard augmentation",
              "mixup": "standard + pixel mixup (Zhang et al. 2018)",
              "lsi-uniform": "standard + LSI, AAE with uniform prior (Liu et al. 2018)",
              "lsi-gaussian": "standard + LSI, AAE with Gaussian prior (holes ablation)",
              "lsi-vae": "standard + LSI, VAE (beta 0.1, posterior means)"}


@dataclass(frozen=True)
class LSIConfig:
    """The augmentation protocol shared by every row of an LSI suite."""
    ratio: float = 1.0                 # r: each batch = B real + round(r*B) generated images (LSI rows)
    lam: str = "uniform"               # LSI lambda: "uniform" = U(0, 1) per pair (= Beta(1, 1)); "half" = fixed 0.5
    mixup_alpha: float = 1.0           # pixel mixup: lambda ~ Beta(alpha, alpha), one per batch (Zhang et al.: 1 on CIFAR-10)
    latent_dim: int = 16               # code size of the three generators
    vae_kl_coeff: float = 0.1          # beta of the `vae` generator: the official AASAE script's 0.1, not the ELBO's 1
                                       # (at beta 1 and these budgets the VAE collapses to its prior: KL 0.005 nats on
                                       # lsi-quick, every code decodes to the mean image; at 0.1 KL 3.4 nats)
    label_fractions: tuple[float, ...] = (1.0, 0.1, 0.01)  # class-balanced shares of the train labels
    min_per_class: int = 2             # a label subset never has fewer labels per class than this
    hole_pairs: int = 512              # inter-class train pairs the hole measures are computed on
    grid_classes: tuple[int, int] = (0, 1)  # the two classes the interpolation picture goes between
    grid_pairs: int = 4                # rows of the picture (pairs of train images)
    grid_steps: int = 9                # decoded points per row, lambda = 1 ... 0


@dataclass(frozen=True)
class LSISuite:
    name: str
    description: str
    dataset: str
    backbone: str
    image_size: int
    train: TrainConfig                 # the classifier's budget: the same for every row and label fraction
    generator_train: TrainConfig       # each generator's budget (trained once, cached, reused)
    aug: AugConfig                     # the "standard augmentation" (also applied before every mixing)
    lsi: LSIConfig = field(default_factory=LSIConfig)
    classifier_lr: float = 0.0         # SGD lr of the classifiers at train.batch_size (not rescaled; 0 = the supervised
                                       # baseline's recipe, 0.1 @ 256)
    generator_lr: float = 0.0          # Adam lr of the generators' reconstruction phase at generator_train.batch_size
                                       # (not rescaled; 0 = the method's recipe, 2.5e-4 @ 256)
    train_subset: int = 0              # fixed class-balanced subset of the train split (seed 0; 0 = all): the
                                       # "train split" of everything below (classifiers, label fractions, generators)
    rows: tuple[str, ...] = ROWS
    target: str = "cpu"                # where the suite is meant to run: cpu | gpu
    tolerance: float = 1.0             # default drift tolerance (points) before one is measured

    @property
    def generators(self) -> tuple[str, ...]:
        """The generators this suite's rows need, in row order."""
        return tuple(dict.fromkeys(g for r in self.rows if (g := ROW_GENERATOR[r]) is not None))


LSI_SUITES: Registry[LSISuite] = Registry("LSI suite")

LSI_SUITES.register("lsi-quick", LSISuite(
    name="lsi-quick",
    description="sklearn digits (embedded), 8px, resnet-tiny-s1; 6 rows x 3 label fractions x 3 seeds in <= 3 min "
                "on 2 CPU cores (CI)",
    dataset="digits", backbone="resnet-tiny-s1", image_size=8,
    # 1 epoch of the 1,438 train images in batches of 32 (44 steps, no warmup: cosine from the peak) per
    # classifier and 5 epochs in batches of 32 (220 steps) per generator: 54 classifiers and three generators in
    # 3 minutes on 2 cores (at 8px small batches learn far more per image than large ones)
    train=TrainConfig(epochs=1, batch_size=32, warmup_epochs=0),
    # the recipe's 0.1 @ 256 is 0.0125 at batch 32: far too small for 44 steps. On a held-out 20% of train (no
    # augmentation / standard, 100% and 1% labels, 2 seeds) lr 0.0125 / 0.05 / 0.1 / 0.2 gave a mean of 28.4 /
    # 65.5 / 71.9 / 71.7 %
    classifier_lr=0.1,
    # a reconstruction Adam step larger than the SSL recipe's 2.5e-4 @ 256 (the adversarial Adams keep the
    # AAE's 2e-4): at that rate a few hundred steps leave an autoencoder that knows little beyond the mean image
    generator_train=TrainConfig(epochs=5, batch_size=32, warmup_epochs=1),
    generator_lr=1e-3,
    # brightness/contrast jitter and RandomResizedCrop at scale 1 (the whole image: no crop): on a held-out 20% of
    # train the crop scales 0.4 / 0.7 / 1 gave 32.6 / 56.2 / 92.4 % (3 epochs of 32; no augmentation 96.9)
    aug=AugConfig(crop_scale_min=1.0, hflip_p=0.0),
    lsi=LSIConfig(latent_dim=8),
    tolerance=3.0,
))
LSI_SUITES.register("lsi-fmnist", LSISuite(
    name="lsi-fmnist",
    description="Fashion-MNIST, 4k-image class-balanced train subset, 28px, resnet-tiny; 6 rows x 3 label "
                "fractions x 3 seeds in <= 30 min on 2 CPU cores",
    dataset="fashion-mnist", backbone="resnet-tiny", image_size=28,
    # 2 epochs of the 4k subset in batches of 64 (124 steps) per classifier, 8 epochs (496 steps) per
    # generator: what fits 54 classifiers (each scored on the full 10k test split) and three generators
    # into 30 minutes on 2 cores
    train=TrainConfig(epochs=2, batch_size=64, warmup_epochs=1),
    # trained on the 4k subset and scored on 2k other train images (no augmentation / standard, 100% and 1% labels,
    # seed 0), the recipe's lr (0.025 at batch 64) / 0.1 gave a mean of 49.0 / 61.4 %
    classifier_lr=0.1,
    generator_train=TrainConfig(epochs=8, batch_size=64, warmup_epochs=1),
    generator_lr=1e-3,
    # the fmnist-* recipe's flips and jitter with RandomResizedCrop at scale 1 (the whole image: no crop): trained on a
    # 5k subset for 2 epochs of 64 and scored on 2k other train images, the crop scales 0.2 / 0.6 / 1 gave
    # 42.0 / 56.2 / 66.5 % at 100% labels and 45.6 / 50.3 / 44.6 % at 1% (mean 43.8 / 53.3 / 55.5)
    aug=AugConfig(crop_scale_min=1.0),
    lsi=LSIConfig(latent_dim=16),
    train_subset=4000,
    tolerance=1.0,
))
LSI_SUITES.register("lsi-cifar10", LSISuite(
    name="lsi-cifar10",
    description="CIFAR-10, 32px, resnet18-cifar, 200 classifier epochs, 200 generator epochs (GPU)",
    dataset="cifar10", backbone="resnet18-cifar", image_size=32,
    train=TrainConfig(epochs=200, batch_size=256, warmup_epochs=10),
    generator_train=TrainConfig(epochs=200, batch_size=256, warmup_epochs=10),
    aug=AugConfig(),
    lsi=LSIConfig(latent_dim=128),
    target="gpu",
))


def is_lsi(name: str | None) -> bool:
    """Whether `name` is an LSI suite (the CLI hands those to bench/lsi)."""
    return bool(name) and name in LSI_SUITES


def get(name: str) -> LSISuite:
    return LSI_SUITES.get(name)
