"""Classifier guidance (Song et al., 2021, Sec. 5) against a labelled two-Gaussian mixture and its exact posterior
classifier: at w = 1 the guided score is the score of the requested component, so every sampler must land all its
chains in that component, with the component's own variance."""

import torch
from analytic_classifier import MixturePosteriorClassifier
from test_samplers import STD, WEIGHTS

from ncsn_diffusers.guidance import guided_score
from ncsn_diffusers.toy import mixture_score


def test_guided_score_at_w_1_is_the_score_of_the_requested_component():
    # Bayes: grad log p(x) + grad log p(k | x) = grad log p(x | k) = -(x - mu_k) / (s^2 + sigma^2), at every sigma
    means = [[-0.5, -0.5], [0.5, 0.5]]
    classifier = MixturePosteriorClassifier(means, WEIGHTS, STD)
    x = torch.randn(64, 2, 1, 1, generator=torch.Generator().manual_seed(0))
    for sigma in (0.01, 0.3, 8.0):
        score = mixture_score(x.flatten(1), sigma, torch.tensor(means), WEIGHTS, STD).reshape(x.shape)
        for k in (0, 1):
            labels = torch.full((64,), k)
            guided = guided_score(score, x, torch.tensor(sigma), classifier, labels, 1.0)
            exact = -(x - torch.tensor(means[k]).reshape(1, 2, 1, 1)) / (STD**2 + sigma**2)
            torch.testing.assert_close(guided, exact, rtol=1e-4, atol=1e-4)


def test_guidance_scale_0_returns_the_score_itself_without_the_classifier():
    classifier = MixturePosteriorClassifier([[-0.5], [0.5]], WEIGHTS, STD)
    score, x = torch.randn(3, 1, 1, 1), torch.randn(3, 1, 1, 1)
    assert guided_score(score, x, 1.0, classifier, torch.zeros(3, dtype=torch.long), 0.0) is score
    assert classifier.calls == 0
