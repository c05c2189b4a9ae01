"""Scheduler swaps by diffusers' `from_config` idiom keep the sampler: a round trip through another scheduler gives
back every value that was set or left at its default, and a saved scheduler converts as the same one never saved."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from diffusers import DDIMScheduler, DDPMScheduler, EDMEulerScheduler
from scheduler_contract import kept_config, public

from ncsn_diffusers import (
    AnnealedLangevinScheduler,
    ConsistentAnnealedSamplingScheduler,
    PredictorCorrectorScheduler,
    StochasticHeunScheduler,
)

REPO = Path(__file__).resolve().parents[2]
ALS_SET = dict(
    sigma_max=2,
    sigma_min=0.02,
    num_noise_levels=5,
    steps_per_level=4,
    epsilon=8e-5,
    noise_space="ve",
    prediction_type="score",
    data_range=(-1, 1),
)


def saved_and_loaded(scheduler, tmp_path):
    scheduler.save_config(tmp_path)
    return type(scheduler).from_pretrained(tmp_path)


def through(scheduler, other):
    return type(scheduler).from_config(other.from_config(scheduler.config).config)


@pytest.mark.parametrize("other", [DDIMScheduler, EDMEulerScheduler, PredictorCorrectorScheduler])
def test_annealed_langevin_set_by_hand_comes_back_through_another_scheduler(other):
    """Bug caught: an ALS sent through DDIMScheduler and back came back with final_denoise=True (DDPM's refill)."""
    als = AnnealedLangevinScheduler(**ALS_SET)
    assert kept_config(als, through(als, other)) == dict(als.config)


@pytest.mark.parametrize(
    "other",
    [PredictorCorrectorScheduler, EDMEulerScheduler, DDIMScheduler, ConsistentAnnealedSamplingScheduler],
)
def test_annealed_langevin_at_its_defaults_comes_back_through_another_scheduler(other):
    """Bug caught: a default ALS sent through PC came back with L = 1000, T = 10 (10,001 calls instead of 1,000), and
    through EDMEulerScheduler epsilon-predicting: the other class's defaults were refilled as the ALS's."""
    als = AnnealedLangevinScheduler()
    back = through(als, other)
    assert kept_config(als, back) == dict(als.config)
    assert len(back) == 1000 and back.config.prediction_type == "score"


def test_a_saved_annealed_langevin_keeps_its_step_through_consistent_annealed(tmp_path):
    """Bug caught: a saved ALS with epsilon=8e-5 came back from CAS with 2e-5 (a 4x smaller step): CAS dropped the
    ALS's epsilon, and the carried relative_epsilon=None blocked the default meant for a lost one."""
    als = saved_and_loaded(AnnealedLangevinScheduler(epsilon=8e-5), tmp_path)
    back = through(als, ConsistentAnnealedSamplingScheduler)
    assert back.config.epsilon == 8e-5 and back.config.relative_epsilon is None
    assert public(kept_config(als, back)) == public(als.config)


def test_consistent_annealed_keeps_its_own_step_through_annealed_langevin():
    """Bug caught: the two classes' `epsilon` mean different steps; a CAS step set by hand was dropped as foreign."""
    cas = ConsistentAnnealedSamplingScheduler(num_noise_levels=10, epsilon=1e-4)
    assert through(cas, AnnealedLangevinScheduler).config.epsilon == 1e-4
    assert through(cas, PredictorCorrectorScheduler).config.epsilon == 1e-4
    als = AnnealedLangevinScheduler.from_config(cas.config)
    assert als.config.relative_epsilon == 0.2  # CAS's step is no ALS step: the ladder's own default


@pytest.mark.parametrize("target", [ConsistentAnnealedSamplingScheduler, PredictorCorrectorScheduler])
def test_a_saved_scheduler_converts_as_the_same_one_never_saved(target, tmp_path):
    """Bug caught: CAS.from_config of an unsaved ALS had final_denoise=True, of the same ALS saved and loaded False."""
    als = AnnealedLangevinScheduler(sigma_max=2.0)
    unsaved = target.from_config(als.config)
    saved = target.from_config(saved_and_loaded(als, tmp_path).config)
    assert public(unsaved.config) == public(saved.config)
    assert unsaved.config.final_denoise is False  # the ALS's own choice, set or left at its default


def test_a_carried_relative_epsilon_none_does_not_block_the_default(tmp_path):
    """Bug caught: a CAS config carrying an ALS's relative_epsilon=None (but not its epsilon) gave the ALS epsilon
    2e-5, past the stability bound of a foreign ladder, instead of the relative default."""
    cas = ConsistentAnnealedSamplingScheduler(sigma_min=0.002, sigma_max=80.0)
    config = {**cas.config, "relative_epsilon": None}
    als = AnnealedLangevinScheduler.from_config(config)
    assert als.config.relative_epsilon == 0.2


def test_a_ddpm_config_still_converts_to_vp_coordinates():
    """The swap the README teaches for DDPM models: its values, default or not, describe the model."""
    als = AnnealedLangevinScheduler.from_config(DDPMScheduler().config)
    assert als.config.noise_space == "vp" and als.config.prediction_type == "epsilon" and als.config.final_denoise
    assert als.config.num_noise_levels == 100 and als.config.steps_per_level == 10
    stochastic_heun = StochasticHeunScheduler.from_config(EDMEulerScheduler(sigma_max=80.0).config)
    assert stochastic_heun.config.sigma_max == 80.0


# diffusers' `test_compatibles` as written upstream: the round trip goes through the *last* class of `compatibles`,
# a list made from a set, whose order follows the interpreter's hash seed.
UPSTREAM_TEST_COMPATIBLES = """
from diffusers.utils import DummyObject
from ncsn_diffusers.schedulers import SCORE_SCHEDULERS
for cls in SCORE_SCHEDULERS:
    scheduler = cls()
    for comp_scheduler_cls in scheduler.compatibles:
        if not isinstance(comp_scheduler_cls, DummyObject):
            comp_scheduler = comp_scheduler_cls.from_config(scheduler.config)
    new_scheduler = cls.from_config(comp_scheduler.config)
    new_scheduler_config = {k: v for k, v in new_scheduler.config.items() if k in scheduler.config}
    assert new_scheduler_config == dict(scheduler.config), (cls.__name__, type(comp_scheduler).__name__)
"""


@pytest.mark.parametrize("hash_seed", ["0"])
def test_upstream_test_compatibles_passes_whatever_the_hash_seed(hash_seed):
    """Bug caught: upstream's `test_compatibles` failed or passed depending on PYTHONHASHSEED (through DDIM the ALS
    came back with final_denoise=True, through PC with other levels)."""
    env = {
        **os.environ,
        "PYTHONHASHSEED": hash_seed,
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    result = subprocess.run([sys.executable, "-c", UPSTREAM_TEST_COMPATIBLES], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
