"""A small digits classifier whose penultimate layer is the feature space of the digits Fréchet distance.

It plays the role Inception-v3 plays for FID, on data Inception was never meant for: it is trained in a few seconds on
the CPU, deterministically (fixed seed, one thread, deterministic algorithms), on the training split of the embedded
digits at the resolution being evaluated, and cached as safetensors beside a json of its held-out accuracy.
"""

import contextlib
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..digits import load_digits_images

# Part of the cache key: bump it whenever the architecture or the training recipe changes.
CLASSIFIER_VERSION = 1
NUM_CLASSES = 10


class DigitsClassifier(nn.Module):
    """conv 3x3, ReLU, max-pool to 8x8, conv 3x3, ReLU, max-pool to 4x4, linear, ReLU (the features), linear.

    Args:
        width (`int`, defaults to 16): channels of the first convolution; the second has twice as many.
        feature_dim (`int`, defaults to 64): size D of the feature layer.
    """

    def __init__(self, width: int = 16, feature_dim: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(2 * width * 4 * 4, feature_dim)
        self.fc2 = nn.Linear(feature_dim, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features of shape `(N, D)` for images of shape `(N, 1, R, R)` in [0, 1]."""
        x = F.adaptive_max_pool2d(F.relu(self.conv1(x)), 8)  # (N, W, 8, 8); a no-op at the native 8x8
        x = F.adaptive_max_pool2d(F.relu(self.conv2(x)), 4)  # (N, 2W, 4, 4)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


@torch.no_grad()
def classifier_outputs(
    classifier: DigitsClassifier, images: torch.Tensor, batch_size: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features `(N, D)` and logits `(N, 10)` of images `(N, 1, R, R)`, in float32 on the CPU."""
    classifier.eval()
    device = next(classifier.parameters()).device
    features, logits = [], []
    for batch in images.split(batch_size):
        f = classifier.features(batch.to(device, torch.float32))
        features.append(f.cpu())
        logits.append(classifier.fc2(f).cpu())
    return torch.cat(features), torch.cat(logits)


@contextlib.contextmanager
def _deterministic(seed: int):
    """One thread, deterministic kernels, a private RNG seeded with `seed`; the caller's settings come back after."""
    num_threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_num_threads(num_threads)


def train_digits_classifier(
    resolution: int, seed: int = 0, num_epochs: int = 15, batch_size: int = 32, learning_rate: float = 3e-3
) -> tuple[DigitsClassifier, dict]:
    """Trains the classifier on the digits training split, on the CPU, bit-for-bit reproducibly for a given seed.

    AdamW with a one-cycle learning-rate schedule; about 675 steps, a few seconds on one core.

    Returns:
        `tuple[DigitsClassifier, dict]`: the classifier in eval mode and its info: `resolution`, `seed`, `version`,
        `feature_dim`, `test_accuracy` (on the held-out split).
    """
    train_images, train_labels = load_digits_images(resolution, split="train")
    with _deterministic(seed):
        classifier = DigitsClassifier()
        optimizer = torch.optim.AdamW(classifier.parameters(), lr=learning_rate, weight_decay=1e-2)
        steps_per_epoch = math.ceil(len(train_images) / batch_size)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, learning_rate, total_steps=num_epochs * steps_per_epoch
        )
        classifier.train()
        for _ in range(num_epochs):
            for index in torch.randperm(len(train_images)).split(batch_size):
                loss = F.cross_entropy(classifier(train_images[index]), train_labels[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
    classifier.eval().requires_grad_(False)
    info = {
        "resolution": resolution,
        "seed": seed,
        "version": CLASSIFIER_VERSION,
        "feature_dim": classifier.fc1.out_features,
        "test_accuracy": held_out_accuracy(classifier, resolution),
    }
    return classifier, info


def held_out_accuracy(classifier: DigitsClassifier, resolution: int) -> float:
    """Share of the held-out digits split that `classifier` labels correctly."""
    test_images, test_labels = load_digits_images(resolution, split="test")
    _, logits = classifier_outputs(classifier, test_images)
    return float((logits.argmax(dim=1) == test_labels).double().mean())


def default_cache_dir() -> str:
    """`$NCSN_DIFFUSERS_CACHE`, else `~/.cache/ncsn_diffusers`."""
    return os.environ.get("NCSN_DIFFUSERS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ncsn_diffusers")


def load_digits_classifier(
    resolution: int, seed: int = 0, cache_dir: str | None = None
) -> tuple[DigitsClassifier, dict]:
    """The cached classifier for (resolution, seed), trained and cached on first use.

    Args:
        resolution (`int`): side length of the images it classifies.
        seed (`int`, defaults to 0): training seed.
        cache_dir (`str`, *optional*): where the safetensors and json files live; defaults to `default_cache_dir()`.

    Returns:
        `tuple[DigitsClassifier, dict]`: as `train_digits_classifier`.
    """
    cache_dir = cache_dir or default_cache_dir()
    stem = os.path.join(cache_dir, f"digits_classifier_v{CLASSIFIER_VERSION}_res{resolution}_seed{seed}")
    weights_path, info_path = stem + ".safetensors", stem + ".json"
    if os.path.isfile(weights_path) and os.path.isfile(info_path):
        try:
            with open(info_path) as f:
                info = json.load(f)
            classifier = DigitsClassifier(feature_dim=info["feature_dim"])
            classifier.load_state_dict(load_file(weights_path))
        except Exception as error:  # a torn or foreign file: JSON, safetensors and state-dict errors alike
            raise ValueError(
                f"The cached digits classifier {weights_path} (with {info_path}) cannot be read ({error}). Delete both "
                "files to retrain it (seconds), or pass another --cache_dir."
            ) from error
        return classifier.eval().requires_grad_(False), info

    classifier, info = train_digits_classifier(resolution, seed=seed)
    os.makedirs(cache_dir, exist_ok=True)
    # Write-then-rename, so a concurrent reader never sees half a file.
    save_file(classifier.state_dict(), weights_path + f".tmp{os.getpid()}")
    os.replace(weights_path + f".tmp{os.getpid()}", weights_path)
    with open(info_path + f".tmp{os.getpid()}", "w") as f:
        json.dump(info, f, indent=2)
    os.replace(info_path + f".tmp{os.getpid()}", info_path)
    return classifier, info
