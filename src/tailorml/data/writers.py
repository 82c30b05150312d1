"""The "synthetic writers" benchmark: per-writer handwriting styles built from sklearn's digits.

"Personalization of Deep Learning" evaluates on NIST SD19 handwriting (about 4000 writers),
which cannot be downloaded here. This module builds its synthetic stand-in from the 8x8
digits that ship with scikit-learn (1797 images), upsampled to 16x16:

- *hidden factors*: each digit class is clustered into sub-styles (k-means); a writer uses one
  sub-style per digit, so a writer's samples of a class resemble each other more than the
  class as a whole does, as in the paper;
- *personal style*: slant, rotation, scale, stroke thickness, ink and noise per writer, with
  small per-sample jitter;
- *flips as classes*: like the paper, horizontally and vertically flipped digits are classes
  of their own (30 classes; symmetric digits such as 0 and 8 become ambiguous);
- *personal label conventions*: with some probability a writer swaps the labels of a pair of
  confusable digits (e.g. calls their 1 a 7), so their labels conflict with the general data
  and personalization matters. General-data writers never swap.

Everything is SYNTHETIC and deterministic given the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from tailorml.config import WritersConfig

N_DIGITS = 10
ORIENTATIONS = ("upright", "hflip", "vflip")
CLASS_NAMES = [f"{digit}" for digit in range(N_DIGITS)] + [
    f"{digit}-{orientation}" for orientation in ORIENTATIONS[1:] for digit in range(N_DIGITS)
]
CONFUSABLE_PAIRS = ((1, 7), (4, 9), (3, 8), (5, 6), (2, 7), (0, 6), (3, 5), (8, 9))


@dataclass(frozen=True)
class WriterStyle:
    slant: float
    rotation_degrees: float
    scale: float
    thickness: int
    ink: float
    noise: float
    substyle: tuple[int, ...]  # sub-style cluster used for each digit
    swap: tuple[int, int] | None  # personal label convention, or None


@dataclass
class Writers:
    images: np.ndarray  # (n, 1, side, side) float32 in [0, 1]
    labels: np.ndarray  # (n,) int64 class index (after the writer's own conventions)
    writer: np.ndarray  # (n,) int64 index into `names`
    names: list[str]  # 'writer-000'...: individuals first, then 'general-000'...
    styles: list[WriterStyle]
    n_individuals: int


def _base_images(side: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images / 16.0
    zoom = side / images.shape[1]
    upsampled = np.stack([ndimage.zoom(image, zoom, order=1) for image in images])
    return np.clip(upsampled, 0.0, 1.0), digits.target


def _substyles(images: np.ndarray, labels: np.ndarray, k: int, seed: int) -> list[list[np.ndarray]]:
    """Per digit, the indices of each of its k sub-style clusters."""
    from sklearn.cluster import KMeans

    clusters = []
    for digit in range(N_DIGITS):
        members = np.flatnonzero(labels == digit)
        model = KMeans(n_clusters=k, n_init=4, random_state=seed)
        assignment = model.fit_predict(images[members].reshape(len(members), -1))
        clusters.append([members[assignment == c] for c in range(k)])
    return clusters


def draw_style(config: WritersConfig, rng: np.random.Generator, personal: bool) -> WriterStyle:
    swap = None
    draw_swap = rng.random() < config.label_swap_probability
    pair = CONFUSABLE_PAIRS[int(rng.integers(len(CONFUSABLE_PAIRS)))]
    if personal and draw_swap:
        swap = pair
    return WriterStyle(
        slant=float(rng.uniform(-config.max_slant, config.max_slant)),
        rotation_degrees=float(rng.uniform(-config.max_rotation, config.max_rotation)),
        scale=float(rng.uniform(*config.scale_range)),
        thickness=int(rng.integers(0, 2)),
        ink=float(rng.uniform(0.7, 1.0)),
        noise=float(rng.uniform(0.0, config.max_noise)),
        substyle=tuple(int(c) for c in rng.integers(0, config.substyles, N_DIGITS)),
        swap=swap,
    )


def render(base: np.ndarray, style: WriterStyle, rng: np.random.Generator) -> np.ndarray:
    """One sample: the writer's affine style plus jitter, thickness, ink and noise."""
    side = base.shape[0]
    angle = np.deg2rad(style.rotation_degrees + rng.normal(0.0, 3.0))
    shear = style.slant + rng.normal(0.0, 0.05)
    scale = style.scale * (1.0 + rng.normal(0.0, 0.03))
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = rotate @ np.array([[1.0, shear], [0.0, 1.0]]) / scale
    centre = (side - 1) / 2.0
    offset = centre - matrix @ np.array([centre, centre]) + rng.normal(0.0, 0.4, 2)
    image = ndimage.affine_transform(base, matrix, offset=offset, order=1, mode="constant")
    if style.thickness:
        image = ndimage.grey_dilation(image, size=(2, 2))
    image = image * style.ink + rng.normal(0.0, style.noise, image.shape)
    return np.clip(image, 0.0, 1.0)


def personal_label(digit: int, orientation: int, swap: tuple[int, int] | None) -> int:
    if swap is not None and digit in swap:
        digit = swap[1] if digit == swap[0] else swap[0]
    return orientation * N_DIGITS + digit


def make_writers(config: WritersConfig) -> Writers:
    """Individuals ('writer-000'...) and general-data writers ('general-000'...)."""
    base, base_labels = _base_images(config.image_size)
    clusters = _substyles(base, base_labels, config.substyles, config.seed)
    names = [f"writer-{i:03d}" for i in range(config.individuals)] + [
        f"general-{i:03d}" for i in range(config.general_writers)
    ]
    images, labels, owners, styles = [], [], [], []
    for index in range(len(names)):
        personal = index < config.individuals
        stream = (0, index) if personal else (1, index - config.individuals)
        rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=stream))
        style = draw_style(config, rng, personal=personal)
        styles.append(style)
        for digit in range(N_DIGITS):
            pool = clusters[digit][style.substyle[digit]]
            for orientation in range(len(ORIENTATIONS)):
                for _ in range(config.samples_per_class):
                    image = render(base[rng.choice(pool)], style, rng)
                    if orientation == 1:
                        image = image[:, ::-1]
                    elif orientation == 2:
                        image = image[::-1, :]
                    images.append(image)
                    labels.append(personal_label(digit, orientation, style.swap))
                    owners.append(index)
    return Writers(
        images=np.asarray(images, dtype=np.float32)[:, None],
        labels=np.asarray(labels, dtype=np.int64),
        writer=np.asarray(owners, dtype=np.int64),
        names=names,
        styles=styles,
        n_individuals=config.individuals,
    )
