"""Classifier guidance for score models (Song et al., 2021, Sec. 5 and App. I), in one place.

The score of the class-conditional perturbed distribution is, by Bayes' rule,

    grad_x log p_sigma(x | y) = grad_x log p_sigma(x) + grad_x log p_sigma(y | x),

so a score model s(x, sigma) and a noise-conditional classifier p_phi(y | x, sigma) give the guided score

    s_w(x, sigma, y) = s(x, sigma) + w grad_x log p_phi(y | x, sigma),

w = 1 being the conditional score and w > 1 sharpening it (the tempered p(x) p(y | x)**w). Every score sampler takes
s_w in place of s; diffusers' EDM solvers take the denoiser D_w(x, sigma) = x + sigma**2 s_w(x, sigma, y).
"""

import contextlib
import math

import torch

# w when class labels are given without a scale: with the default digits model and the classifier of
# `--objective noise_classifier`, w = 4 puts 98-100% of the samples of every class in the requested class, w = 1 (the
# exact conditional only for a perfect classifier) 66-88% (docs/controllable_generation.md, "Guided digits").
DEFAULT_GUIDANCE_SCALE = 4.0


def input_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype `model` computes in: a diffusers model's `dtype` (which skips the modules it keeps in float32 and
    reads layerwise casting's compute dtype), else that of its first floating-point parameter, else float32."""
    if isinstance(getattr(model, "dtype", None), torch.dtype):
        return model.dtype
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def casts_layerwise(model: torch.nn.Module) -> bool:
    """Whether diffusers' layerwise casting (`enable_layerwise_casting`) stores some of `model`'s weights."""
    hooks = (getattr(module, "_diffusers_hook", None) for module in model.modules())
    return any(hook is not None and hook.get_hook("layerwise_casting") is not None for hook in hooks)


def classifier_log_prob_grad(
    classifier: torch.nn.Module, sample: torch.Tensor, sigma: torch.Tensor | float, class_labels: torch.Tensor
) -> torch.Tensor:
    """
    grad_x log p_phi(y | x, sigma), in float32, shaped like `sample`.

    Args:
        classifier (`torch.nn.Module`):
            Maps `(sample, sigma)` to an output whose `.logits` (or first element) has shape `(B, K)`, such as
            [`NoiseConditionalClassifier`].
        sample (`torch.Tensor` of shape `(B, C, H, W)`):
            x, at noise level sigma.
        sigma (`float` or `torch.Tensor`):
            The noise level the classifier is conditioned on.
        class_labels (`torch.Tensor` of shape `(B,)`):
            y, one integer class per sample.
    """
    dtype = input_dtype(classifier)
    # Layerwise casting puts each weight back into its storage dtype after the forward; the backward needs the weight
    # it multiplied by, so keep a copy of each saved weight (activations are saved as they are).
    keep_weights = (
        torch.autograd.graph.saved_tensors_hooks(
            lambda t: t.detach().clone() if isinstance(t, torch.nn.Parameter) else t, lambda t: t
        )
        if casts_layerwise(classifier)
        else contextlib.nullcontext()
    )
    with torch.enable_grad(), keep_weights:  # pipelines sample under no_grad
        x = sample.detach().float().requires_grad_(True)
        output = classifier(x.to(dtype), sigma)
        logits = (output.logits if hasattr(output, "logits") else output[0]).float()  # (B, K)
        # the sum over the batch: each sample's log-probability depends on its own x only
        log_prob = logits.log_softmax(dim=-1).gather(1, class_labels.reshape(-1, 1)).sum()
        return torch.autograd.grad(log_prob, x)[0]


def guided_score(
    score: torch.Tensor,
    sample: torch.Tensor,
    sigma: torch.Tensor | float,
    classifier: torch.nn.Module | None,
    class_labels: torch.Tensor | None,
    guidance_scale: float,
) -> torch.Tensor:
    """
    s(x, sigma) + w grad_x log p_phi(y | x, sigma). With w = 0, or no labels, it returns `score` itself, without
    calling the classifier: unguided sampling, bit for bit.

    Args:
        score (`torch.Tensor` of shape `(B, C, H, W)`):
            s(x, sigma), the score model's output.
        sample (`torch.Tensor` of shape `(B, C, H, W)`):
            x, the point the score was evaluated at.
        sigma (`float` or `torch.Tensor`):
            The noise level of that evaluation.
        classifier (`torch.nn.Module`, *optional*):
            p_phi(y | x, sigma); needed only when w != 0.
        class_labels (`torch.Tensor` of shape `(B,)`, *optional*):
            y, one class per sample.
        guidance_scale (`float`):
            w.
    """
    if guidance_scale == 0 or class_labels is None:
        return score
    grad = classifier_log_prob_grad(classifier, sample, sigma, class_labels)
    return torch.add(score.float(), grad, alpha=guidance_scale).to(score.dtype)


def check_guidance(
    classifier: torch.nn.Module | None, class_labels, guidance_scale: float | None, batch_size: int, device
) -> torch.Tensor | None:
    """
    The class labels as a `(batch_size,)` long tensor on `device` (an int gives every image that class), or `None`
    when no guidance is asked for; raises a ValueError that names the argument at fault. `guidance_scale=None` means
    w = `DEFAULT_GUIDANCE_SCALE` (4) when labels are given.
    """
    if guidance_scale is not None and (
        isinstance(guidance_scale, bool)
        or not isinstance(guidance_scale, (int, float))
        or not (math.isfinite(guidance_scale) and guidance_scale >= 0)
    ):
        raise ValueError(
            f"guidance_scale={guidance_scale!r} must be a finite number >= 0 (0 = unguided, 1 = p(x | y), default "
            f"{DEFAULT_GUIDANCE_SCALE:g})."
        )
    if class_labels is None:
        if guidance_scale is not None:
            raise ValueError(
                f"guidance_scale={guidance_scale} needs class_labels (an int, or one label per image); pass them, "
                "or leave guidance_scale out."
            )
        return None
    if classifier is None:
        raise ValueError(
            "class_labels were given but the pipeline has no classifier; load one with "
            "NCSNPipeline.from_pretrained(folder, classifier=NoiseConditionalClassifier.from_pretrained(dir))."
        )
    labels = torch.as_tensor(class_labels)
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.ndim > 1 or labels.numel() == 0:
        raise ValueError(f"class_labels={class_labels!r} must be an int or a list / 1-d tensor of ints.")
    labels = labels.long().reshape(-1)
    labels = labels.expand(batch_size) if labels.numel() == 1 else labels
    if len(labels) != batch_size:
        raise ValueError(
            f"class_labels has {len(labels)} labels for batch_size={batch_size}; pass one int, or one per image."
        )
    num_classes = getattr(getattr(classifier, "config", None), "num_classes", None)
    if labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes):
        raise ValueError(
            f"class_labels must lie in 0..{num_classes - 1 if num_classes else 'K-1'} (the classifier's classes), "
            f"got {labels.unique().tolist()}."
        )
    return labels.to(device)
