"""Class-aware metrics from a small CNN trained on the run's real data (`ganbench.classifier`).

Labelled images: `class_fd`, a Fréchet distance in the classifier's 128-d penultimate features
(FID's formula, Heusel et al. 2017, cheap enough on a CPU to follow training closely);
`classes_covered` and `class_kl`, the generated class histogram against the real one.
Stacked MNIST: `modes_covered` out of 1,000 and `mode_kl` against the uniform distribution over
modes, each channel read by the mnist5k digit classifier (Srivastava et al. 2017, VEEGAN; Lin et
al. 2018, PacGAN). The classifier's held-out accuracy goes into the provenance, not the values:
it says how far to trust them, and is nothing to rank.

`class_confidence` is the mean softmax probability of the class the classifier picks for each
generated image (for Stacked MNIST, of each channel's digit). On MNIST, blobs and smears between
digits get low confidence yet still land in some class, so the class counts believe them; the
metric declares the counts converged only once the confidence reaches `converged_confidence`
(`ganbench.Convergence`), and the report does not rank on them before.

On Stacked MNIST confidence does not tell blobs apart: a generator collapsed onto a few blobs
after 200 steps is read with confidence 0.83-0.97. `digit_fd`, the same Fréchet distance as
`class_fd` over every generated channel against the real digits, does (about 1,000 for those blobs,
80-150 for recognisable DCGAN digits), so the mode counts are trusted only once it is at most
`converged_digit_fd`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import ganbench
from ganbench import classifier
from ganbench import features
from ganbench_plugins.datasets.stacked_mnist import CHANNELS, MODES, SIDE, StackedMnistData, mode_labels

CLASS_FD = "class_fd"
CLASSES_COVERED = "classes_covered"
CLASS_KL = "class_kl"
MODES_COVERED = "modes_covered"
MODE_KL = "mode_kl"
CLASS_CONFIDENCE = "class_confidence"
BETTER = {CLASS_FD: "min", CLASSES_COVERED: "max", CLASS_KL: "min", CLASS_CONFIDENCE: "max"}
DIGIT_FD = "digit_fd"
STACKED_BETTER = {MODES_COVERED: "max", MODE_KL: "min", DIGIT_FD: "min", CLASS_CONFIDENCE: "max"}
CONFIDENCE_WHY = ("the classifier's mean confidence on the real images is {real}; "
                  "blobs and smears between digits score far lower but still fall in some class")

# A class must get at least this fraction of its real share of the samples to count as covered: 1%
# of the samples for 10 balanced classes. A count of one would credit a collapsed generator with
# every class its few misclassified samples land in.
COVERAGE_SHARE = 0.1
# Added to every class's probability before renormalising, so a class the reference lacks gives a
# large finite KL (about 23 nats per unit of generated mass) rather than infinity. Far below 1/N for
# any sample count, it moves any other KL by less than 1e-5 nats, even over 1,000 modes.
KL_EPSILON = 1e-10
COVERAGE_RULE = (f"a class is covered when its share of the generated samples is at least {COVERAGE_SHARE} × its "
                 "share of the real samples, both as the classifier labels them")
KL_RULE = (f"KL(generated ‖ reference) in nats over the classifier's labels; both histograms normalised after "
           f"adding ε = {KL_EPSILON:g} to each class's probability")
MODE_KL_RULE = (f"KL(generated ‖ uniform over the {MODES} modes) in nats; the generated histogram normalised after "
                f"adding ε = {KL_EPSILON:g} to each mode's probability")
MODE_RULE = ("VEEGAN/PacGAN: each channel classified by the mnist5k digit classifier, mode = "
             "100·d_R + 10·d_G + d_B; a mode is covered when at least one generated sample falls in it")
FD_RULE = (f"Fréchet distance between Gaussians fitted to the classifier's {classifier.FEATURES}-d penultimate "
           "features: |m1 - m2|² + Tr(C1 + C2 - 2 sqrtm(C1 C2)), scipy.linalg.sqrtm, float64")
DIGIT_FD_WHY = ("blobs from 200 Stacked-MNIST steps measure 880-1,170 yet are read with class confidence "
                "0.83-0.97, so confidence cannot guard these counts; MNIST DCGANs cross the 0.8 confidence floor "
                "at a class FD of 170-180; real triples from 10 random modes measure about 60-100, so collapse "
                "alone stays within the bound unless a channel draws a single digit")
DIGIT_FD_RULE = ("the same Fréchet distance over single digits: every channel of every generated image against all the "
                 "real mnist5k digits (the statistics cached with the classifier)")


@dataclass(frozen=True)
class Params:
    samples: ganbench.NonNegativeInt = 0  # generated samples per eval point; 0 = eval_samples (PacGAN: 26,000 for Stacked MNIST)
    every: ganbench.PositiveInt = 1  # evaluate at every k-th eval point (the last step always)
    # The report reads it; it changes no value, so it is not part of the run id.
    converged_confidence: ganbench.Probability = field(default=0.8, metadata=ganbench.REPORT_ONLY)  # class counts are trusted from this mean confidence up
    converged_digit_fd: ganbench.PositiveFloat = field(default=180.0, metadata=ganbench.REPORT_ONLY)  # Stacked MNIST mode counts are trusted from this digit FD down


def histogram(labels: Tensor, classes: int) -> np.ndarray:
    """Counts of each class among `labels`, as int64 numpy."""
    return torch.bincount(labels.reshape(-1).cpu(), minlength=classes).numpy()


def classes_covered(generated: np.ndarray, real: np.ndarray, share: float = COVERAGE_SHARE) -> int:
    """Classes whose generated share is at least `share` × their real share (`COVERAGE_RULE`)."""
    p, q = generated / max(generated.sum(), 1), real / max(real.sum(), 1)
    return int(((p >= share * q) & (q > 0)).sum())


def histogram_kl(generated: np.ndarray, reference: np.ndarray, eps: float = KL_EPSILON) -> float:
    """KL(generated ‖ reference) in nats between two count histograms, smoothed as `KL_RULE` says."""
    def smoothed(counts: np.ndarray) -> np.ndarray:
        p = counts.astype(np.float64) / max(counts.sum(), 1)
        return (p + eps) / (1 + eps * len(p))

    p, q = smoothed(generated), smoothed(reference)
    return float(np.sum(p * np.log(p / q)))


@dataclass
class Reference:
    """The real side of the comparison, computed once per run."""

    mean: np.ndarray
    cov: np.ndarray
    counts: np.ndarray  # the classifier's labels of the real samples
    count: int
    split: str


class ClassifierMetric:
    """Class FD, classes covered and class KL from a classifier of the data (Stacked MNIST: modes)."""

    name = "classifier"
    paper = "Heusel et al. 2017 (the Fréchet distance); Metz et al. 2017, Srivastava et al. 2017 (Stacked MNIST's 1,000 modes)"
    params = Params
    transient = ("trained", "reference")  # caches, rebuilt on demand: nothing a checkpoint must hold

    def __init__(self, params: Params) -> None:
        self.p = params
        self.trained: classifier.TrainedClassifier | None = None
        self.reference: Reference | None = None

    @classmethod
    def check(cls, params: Params, setup: Any) -> str | None:
        data = getattr(setup, "data", None)
        # Stacked MNIST passes as labelled images too (1,000 classes); evaluate tells it apart.
        if data is not None and (data.kind != "image" or not data.num_classes):
            what = "unlabelled images" if data.kind == "image" else f'kind "{data.kind}"'
            return (f"it trains a classifier of the dataset's classes, but this dataset gives {what}; "
                    "use it with labelled images (mnist5k, stacked-mnist, cifar10, ...), or pick other metrics "
                    "(fid for images, mixture-modes for points)")
        n = params.samples or getattr(setup, "eval_samples", None)
        if n is not None and n < 2:
            return f"{n} generated samples: a covariance needs at least 2"
        return None

    @ganbench.hookimpl
    def ganbench_evaluate(self, run: ganbench.Run, step: int, generator: nn.Module) -> ganbench.MetricValues | None:
        s = run.settings
        if not features.due(run, step, self.p.every):
            return None
        n = self.p.samples or s.eval_samples
        if isinstance(run.data, StackedMnistData):
            return self.stacked_modes(run, generator, n)
        return self.class_metrics(run, generator, n)

    def classifier_of(self, data: ganbench.Data, device: torch.device) -> classifier.TrainedClassifier:
        if self.trained is None:
            self.trained = features.trained_classifier(data, device)
        return self.trained

    def provenance(self, trained: classifier.TrainedClassifier, n: int) -> dict[str, Any]:
        return {
            "classifier": trained.recipe,
            "classifier_accuracy": trained.accuracy,
            "classifier_held_out": trained.held_out,
            "classifier_data_sha256": trained.data_hash,
            "generated_samples": n,
            "every": self.p.every,
        }

    def convergence(self, trained: classifier.TrainedClassifier, guards: tuple[str, ...]) -> ganbench.Convergence:
        real = getattr(trained, "real_confidence", None)
        return ganbench.Convergence(
            key=CLASS_CONFIDENCE, at_least=self.p.converged_confidence, guards=guards,
            why=CONFIDENCE_WHY.format(real="unknown" if real is None else f"{real:.3f}"))

    def real_reference(self, run: ganbench.Run, trained: classifier.TrainedClassifier) -> Reference:
        if self.reference is None:
            n, data = run.settings.real_samples, run.data
            whole = isinstance(data, ganbench.TensorData) and n >= len(data) and len(data) == trained.real_count
            if whole:
                # All of the data: the statistics cached with the classifier describe exactly it.
                self.reference = Reference(trained.feature_mean, trained.feature_cov, trained.class_counts,
                                           len(data), f"all {len(data)} samples (cached with the classifier)")
            else:
                x, _, split = features.real_subset(data, n)
                encoded = classifier.encode(trained.model, x.split(classifier.EVAL_BATCH))
                mean, cov = classifier.feature_statistics(encoded.features)
                self.reference = Reference(mean, cov, histogram(encoded.predicted, data.num_classes), len(x), split)
        return self.reference

    def class_metrics(self, run: ganbench.Run, generator: nn.Module, n: int) -> ganbench.MetricValues:
        trained = self.classifier_of(run.data, run.device)
        real = self.real_reference(run, trained)
        encoded = classifier.encode(trained.model, features.eval_batches(run, generator, n))
        mean, cov = classifier.feature_statistics(encoded.features)
        counts = histogram(encoded.predicted, run.data.num_classes)
        return ganbench.MetricValues(
            metric=self.name,
            values={
                CLASS_FD: classifier.frechet_distance(mean, cov, real.mean, real.cov),
                CLASSES_COVERED: float(classes_covered(counts, real.counts)),
                CLASS_KL: histogram_kl(counts, real.counts),
                CLASS_CONFIDENCE: float(encoded.confidence.mean()),
            },
            better=dict(BETTER),
            convergence=self.convergence(trained, (CLASSES_COVERED, CLASS_KL)),
            provenance={
                **self.provenance(trained, n),
                "real_samples": real.count,
                "real_split": real.split,
                "classes_total": run.data.num_classes,
                "fd_rule": FD_RULE,
                "coverage_rule": COVERAGE_RULE,
                "kl": KL_RULE,
            },
        )

    def stacked_modes(self, run: ganbench.Run, generator: nn.Module, n: int) -> ganbench.MetricValues:
        data: StackedMnistData = run.data
        trained = self.classifier_of(data.digits, run.device)  # the single-digit mnist5k classifier
        # Each image's three channels in a row, so digit i of the result is channel i % 3 of image i // 3.
        channels = (x.reshape(-1, 1, SIDE, SIDE) for x in features.eval_batches(run, generator, n))
        encoded = classifier.encode(trained.model, channels)
        counts = histogram(mode_labels(encoded.predicted.reshape(-1, CHANNELS)), MODES)
        mean, cov = classifier.feature_statistics(encoded.features)
        return ganbench.MetricValues(
            metric=self.name,
            values={MODES_COVERED: float((counts > 0).sum()), MODE_KL: histogram_kl(counts, np.ones(MODES)),
                    DIGIT_FD: classifier.frechet_distance(mean, cov, trained.feature_mean, trained.feature_cov),
                    CLASS_CONFIDENCE: float(encoded.confidence.mean())},
            better=dict(STACKED_BETTER),
            convergence=ganbench.Convergence(
                key=DIGIT_FD, at_least=None, at_most=self.p.converged_digit_fd, guards=(MODES_COVERED, MODE_KL),
                why=DIGIT_FD_WHY),
            provenance={
                **self.provenance(trained, n),
                "data_sha256": data.content_hash(),
                "modes_total": MODES,
                "coverage_rule": MODE_RULE,
                "kl": MODE_KL_RULE,
                "fd_rule": DIGIT_FD_RULE,
            },
        )


@ganbench.hookimpl
def ganbench_register_metrics():
    return [ClassifierMetric]
