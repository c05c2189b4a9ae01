"""Sample-quality statistics as pure functions of features, class probabilities and pixels.

Everything is computed in float64 so that two evaluations of the same numbers agree to the last digits that matter.
"""

import math

import numpy as np
import torch


def _as_float64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def check_finite(x, name: str = "samples") -> None:
    """Raises a ValueError naming how many of the N items of `x` (shape `(N, ...)`) hold a NaN or an infinity.

    Non-finite samples otherwise surface much later, as "Eigenvalues did not converge" inside the Fréchet distance.
    """
    x = torch.as_tensor(x)
    non_finite = int((~torch.isfinite(x.reshape(x.shape[0], -1))).any(dim=1).sum()) if x.numel() else 0
    if non_finite:
        raise ValueError(
            f"{non_finite} of {x.shape[0]} {name} are not finite (NaN or inf). A sampler that produces them has "
            "diverged: lower the Langevin step size epsilon (NCSNv2's Technique 4 gives a stable one), check the "
            "noise levels and the model, and sample again. To score the finite ones anyway, drop the others first "
            "(`images[torch.isfinite(images).flatten(1).all(dim=1)]`) and report how many were dropped."
        )


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean mu of shape `(D,)` and unbiased covariance Sigma of shape `(D, D)` of features of shape `(N, D)`."""
    features = _as_float64(features)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"`features` must have shape (N, D) with N >= 2, got {features.shape}.")
    check_finite(features, "feature vectors")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix; round-off negatives are clipped to 0."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(eigenvalues.clip(min=0.0))) @ eigenvectors.T


def frechet_distance_from_statistics(mu_a, sigma_a, mu_b, sigma_b) -> float:
    """Fréchet distance between N(mu_a, Sigma_a) and N(mu_b, Sigma_b) (Dowson & Landau 1982; FID, Heusel et al. 2017).

    d^2 = ||mu_a - mu_b||^2 + tr(Sigma_a + Sigma_b - 2 (Sigma_a Sigma_b)^(1/2)).

    tr (Sigma_a Sigma_b)^(1/2) is taken as tr (Sigma_a^(1/2) Sigma_b Sigma_a^(1/2))^(1/2): the two matrices are
    similar, and the second is symmetric positive semi-definite, so its square root comes from `eigh` with real
    eigenvalues instead of `scipy.linalg.sqrtm`'s complex Schur form, which needs an epsilon added to singular
    covariances.
    """
    mu_a, sigma_a, mu_b, sigma_b = (_as_float64(x) for x in (mu_a, sigma_a, mu_b, sigma_b))
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape or sigma_a.shape != mu_a.shape * 2:
        raise ValueError(
            f"Means must have shape (D,) and covariances (D, D) on both sides, got {mu_a.shape}, {sigma_a.shape}, "
            f"{mu_b.shape}, {sigma_b.shape}."
        )
    root_a = _sqrt_psd(sigma_a)
    eigenvalues = np.linalg.eigvalsh(root_a @ sigma_b @ root_a)
    trace_sqrt_product = np.sqrt(eigenvalues.clip(min=0.0)).sum()
    distance = np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * trace_sqrt_product
    return float(max(distance, 0.0))


def frechet_distance(features_a, features_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets of shapes `(N_a, D)` and `(N_b, D)`.

    The estimate is biased upwards by finite N (Chong & Forsyth 2020): compare numbers only at equal sample sizes.
    """
    return frechet_distance_from_statistics(*feature_statistics(features_a), *feature_statistics(features_b))


def classifier_confidence(probabilities) -> float:
    """Mean over images of the classifier's largest class probability, max_y p(y | x); `probabilities` is `(N, K)`."""
    return float(_as_float64(probabilities).max(axis=1).mean())


def class_coverage(predicted_labels, num_classes: int = 10) -> dict:
    """How evenly images spread over the classes, from the histogram of predicted labels.

    Returns:
        `dict`: `class_entropy`, the entropy of the histogram divided by log K (1 for uniform, 0 for a single class);
        `class_counts`, the K counts; `classes_missing`, the number of classes never predicted.
    """
    labels = _as_float64(predicted_labels).astype(np.int64).reshape(-1)
    if labels.size == 0 or labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"`predicted_labels` must be a non-empty array of integers in [0, {num_classes}).")
    counts = np.bincount(labels, minlength=num_classes)
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * np.log(p)).sum() / math.log(num_classes)) if num_classes > 1 else 0.0
    return {
        "class_entropy": max(entropy, 0.0),
        "class_counts": counts.tolist(),
        "classes_missing": int((counts == 0).sum()),
    }


def nearest_neighbour_memorisation(samples, training_images, threshold: float = 0.1) -> dict:
    """Flags samples that copy a training image.

    For each sample x, r(x) = min_j ||x - x_j^train|| / d_train, where d_train is the median over training images of
    the distance to their nearest other training image: the spacing of the data. A fresh image has r near 1 or above;
    a copy has r near 0.

    Args:
        samples (`torch.Tensor` of shape `(N, ...)`): the images to check.
        training_images (`torch.Tensor` of shape `(M, ...)`, M >= 2): the images the model was trained on.
        threshold (`float`, defaults to 0.1): r below which a sample counts as memorised.

    Returns:
        `dict`: `memorisation_fraction` (share of samples with r < threshold), `memorisation_median_ratio` (median r),
        `memorisation_threshold`, `train_nn_distance` (d_train).
    """
    x = torch.as_tensor(_as_float64(samples)).flatten(1)
    train = torch.as_tensor(_as_float64(training_images)).flatten(1)
    if train.shape[0] < 2 or x.shape[1] != train.shape[1]:
        raise ValueError(
            f"`training_images` must hold at least 2 images of the samples' size, got {tuple(train.shape)} for "
            f"samples {tuple(x.shape)}."
        )
    train_to_train = torch.cdist(train, train).fill_diagonal_(float("inf"))
    d_train = train_to_train.min(dim=1).values.median().item()
    ratio = torch.cdist(x, train).min(dim=1).values / d_train
    return {
        "memorisation_fraction": float((ratio < threshold).double().mean()),
        "memorisation_median_ratio": float(ratio.median()),
        "memorisation_threshold": float(threshold),
        "train_nn_distance": float(d_train),
    }


def inception_score(logits, splits: int = 10, shuffle_seed: int | None = 2020) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016) from logits of shape `(N, K)`.

    As torch-fidelity computes it: the images are shuffled with `numpy.random.RandomState(shuffle_seed)` (`None`
    keeps their order), cut into `splits` chunks, and the mean and standard deviation over chunks are returned.
    """
    logits = torch.as_tensor(_as_float64(logits))
    n = logits.shape[0]
    if logits.ndim != 2 or n < splits:
        raise ValueError(f"`logits` must have shape (N, K) with N >= splits={splits}, got {tuple(logits.shape)}.")
    if shuffle_seed is not None:
        logits = logits[np.random.RandomState(shuffle_seed).permutation(n)]
    p, log_p = logits.softmax(dim=1), logits.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        chunk = slice(i * n // splits, (i + 1) * n // splits)
        p_y = p[chunk].mean(dim=0, keepdim=True)
        kl_terms = p[chunk] * (log_p[chunk] - p_y.log())
        kl = torch.where(p[chunk] > 0, kl_terms, 0.0).sum(dim=1).mean()  # 0 log 0 = 0
        scores.append(kl.exp().item())
    return float(np.mean(scores)), float(np.std(scores))
