"""TrainingConfig.resolve(): the recipe first, then every check, the same from the command line and from Python."""

import dataclasses
import math

import pytest

import train_ncsn
from ncsn_diffusers.training import TrainingConfig


def refusal(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        train_ncsn.parse_args(argv)
    assert exit_info.value.code != 0
    return capsys.readouterr().err


# Bug caught: the checks ran before --recipe was applied, so these were accepted and failed inside the network at
# step 1, or only when saving after the whole training.
@pytest.mark.parametrize(
    "argv",
    [
        ["--recipe", "ncsn_v1", "--sigma_sampling", "log_uniform"],
        ["--recipe", "ncsn_v1", "--sampler", "stochastic_heun"],
    ],
)
def test_a_combination_refused_by_flags_is_refused_under_the_recipe_and_from_python(argv, capsys):
    message = "--model_type ncsn_v1 conditions on the index of a trained noise level"
    assert message in refusal(argv, capsys)
    assert message in refusal(["--model_type", "ncsn_v1", *argv[2:]], capsys)
    fields = dict(zip(argv[::2], argv[1::2]))
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**{k.removeprefix("--"): v for k, v in fields.items()}).resolve()


# Bug caught: explicit flags were silently dropped under --recipe ncsnv2 and the default ncsnv2 ladder.
@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--recipe", "ncsnv2", "--sigma_max", "5"], "--sigma_max"),
        (["--recipe", "ncsnv2", "--num_noise_levels", "50"], "--num_noise_levels"),
        (["--recipe", "ncsnv2", "--langevin_epsilon", "1e-7"], "--langevin_epsilon"),
        (["--langevin_epsilon", "1e-7"], "--langevin_epsilon"),
    ],
)
def test_an_explicit_flag_the_run_would_ignore_is_refused(argv, flag, capsys):
    err = refusal(argv, capsys)
    assert flag in err and "ncsnv2" in err


def test_explicit_flags_override_the_recipe_and_reach_the_config():
    config = train_ncsn.parse_args(["--recipe", "ncsn_v1", "--sigma_max", "5", "--learning_rate", "3e-4"])
    assert (config.sigma_max, config.learning_rate, config.model_type) == (5.0, 3e-4, "ncsn_v1")
    assert config.lr_scheduler == "constant"  # the recipe's value where no flag was given
    v2 = train_ncsn.parse_args(["--recipe", "ncsnv2", "--langevin_epsilon", "1e-7", "--noise_ladder", "explicit"])
    assert v2.langevin_epsilon == 1e-7


# Bug caught: out-of-range values trained to the end and saved a useless pipeline (decay 2: NaN samples; decay 1: the
# random initialisation; NaN clipping: NaN weights), or failed only after training.
@pytest.mark.parametrize(
    "flag, value",
    [
        ("--ema_max_decay", "2"),
        ("--ema_max_decay", "1"),
        ("--adam_beta1", "1"),
        ("--adam_beta2", "-0.1"),
        ("--adam_epsilon", "0"),
        ("--lr_warmup_steps", "-1"),
        ("--seed", "-1"),
        ("--snr", "inf"),
        ("--snr", "0"),
        ("--max_grad_norm", "nan"),
        ("--save_images_steps", "-1"),
        ("--learning_rate", "inf"),
        ("--langevin_epsilon", "-1"),
    ],
)
def test_every_flag_out_of_range_is_refused_at_parse_time_naming_it(flag, value, capsys):
    extra = ["--noise_ladder", "explicit"] if flag == "--langevin_epsilon" else []
    assert f"{flag} must be" in refusal([flag, value, *extra], capsys)


def test_a_malformed_hub_model_id_is_refused_before_training(capsys):
    assert "--hub_model_id 'a/b/c' is not a Hub repository id" in refusal(
        ["--push_to_hub", "--hub_model_id", "a/b/c"], capsys
    )
    assert train_ncsn.parse_args(["--push_to_hub", "--hub_model_id", "me/model"]).hub_model_id == "me/model"


def test_resolve_returns_a_resolved_copy_and_is_idempotent():
    config = TrainingConfig(model_preset="tiny", resolution=8)
    resolved = config.resolve()
    assert config.learning_rate is None and config.noise_ladder is None  # the input is not changed
    assert (resolved.learning_rate, resolved.noise_ladder, resolved.sampler) == (2e-3, "ncsnv2", "predictor_corrector")
    assert resolved.resolve() is resolved
    assert dataclasses.asdict(resolved) == dataclasses.asdict(
        train_ncsn.parse_args(["--model_preset", "tiny", "--resolution", "8"])
    )
    assert math.isclose(resolved.ema_power, 0.75)


# Bug caught: each was accepted, then failed late with a raw error (diffusers' get_scheduler's KeyError, numpy's
# "Seed must be between 0 and 2**32 - 1" in set_seed) or trained on NaN (sigma_max^2 / sigma_L^2 overflows float32,
# an infinite P_std draws infinite sigmas).
@pytest.mark.parametrize(
    "fields, message",
    [
        ({"lr_scheduler": "bogus"}, "--lr_scheduler must be one of"),
        (
            {"log_sigma_std": math.inf, "sigma_sampling": "log_normal"},
            r"--log_sigma_std \(P_std\) must be a positive number",
        ),
        ({"seed": 2**32}, r"--seed must be an integer in \[0, 2\^32\)"),
        ({"sigma_max": 1e30, "noise_ladder": "explicit"}, "--sigma_max must be a finite number below 1e6"),
    ],
)
def test_out_of_range_flags_are_refused_before_anything_is_built(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**fields).resolve()
