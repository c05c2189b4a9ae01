"""The Hub model card (README.md) of a saved `NCSNPipeline` (score or epsilon network), rendered without network from
`pipeline_card_template.md`."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from huggingface_hub import ModelCardData

from ..pipelines.pipeline_utils import saved_num_inference_steps
from ..schedulers.scheduling_utils import SCORE_SCHEDULER_NAMES
from .card_file import write_card

TAGS = ["ncsn", "score-based", "annealed-langevin", "diffusers:NCSNPipeline", "pytorch"]
# diffusers' scheduler of a folder saved in its `ScoreSdeVePipeline` layout (train_ncsn.py --model_type ncsnpp, the
# Hub's google/ncsnpp folders): its card shows diffusers' own pipeline instead of the package's torch-only loops.
SCORE_SDE_VE_SCHEDULER = "ScoreSdeVeScheduler"
# unet_config["_class_name"] -> what the network predicts, which picks the card's blocks.
MODEL_KINDS = {
    "NCSNUNet2DModel": "score",
    "NCSNRefineNet": "score",
    "NCSNv2Model": "score",
    "NCSNppModel": "score",
    "UNet2DModel": "epsilon",
}
# Classes whose saved folder carries their own source for `diffusers.AutoModel` (the card's `if remote_code` block).
REMOTE_CODE_CLASSES = ("NCSNUNet2DModel",)
KNOWN_DATASETS = {
    "sklearn-digits": "scikit-learn's 8×8 handwritten digits (`sklearn.datasets.load_digits`)",
}
# How a score model's saved sampler draws, by the scheduler's class: the card's first paragraph names it.
SAMPLER_TEXT = {
    "AnnealedLangevinScheduler": "**annealed Langevin dynamics** (Algorithm 1 of the paper): Langevin steps at each "
    "noise level in turn, from the largest to the smallest",
    "PredictorCorrectorScheduler": "the **predictor-corrector** sampler (Song et al., 2021, Algorithm 2): at each "
    "noise level, from the largest to the smallest, Langevin corrector steps and one predictor step",
    "ConsistentAnnealedSamplingScheduler": "**consistent annealed sampling** (Jolicoeur-Martineau et al., 2021, "
    "Algorithm 2): one Langevin-like step per noise level, from the largest to the smallest",
    SCORE_SDE_VE_SCHEDULER: "score SDE's **predictor-corrector** sampler (Song et al., 2021, Algorithm 2) as diffusers' "
    "`ScoreSdeVePipeline` runs it: at each noise level, from the largest to the smallest, a Langevin corrector step "
    "and one reverse-diffusion predictor step",
    "StochasticHeunScheduler": "EDM's **stochastic Heun** sampler (Karras et al., 2022, Algorithm 2): a second-order "
    "solve of the probability-flow ODE from the largest noise level to the smallest, with fresh noise added at each",
}
# How the training drew sigma, by `training["sigma_sampling"]` (train_ncsn.py --sigma_sampling).
SIGMA_SAMPLING_TEXT = {
    "discrete": "σ drawn uniformly from the L levels of the training ladder",
    "log_uniform": "σ drawn log-uniformly from [σ_L, σ_1] (log σ ~ U(log σ_L, log σ_1))",
    "log_normal": "log σ drawn from N($log_sigma_mean, $log_sigma_std²) truncated to [log σ_L, log σ_1] (EDM's "
    "training distribution)",
}
# Scheduler config key -> (paper symbol, meaning) for the settings table.
SCHEDULER_KEYS = {
    "sigma_max": ("σ_1", "largest noise level"),
    "sigma_min": ("σ_L", "smallest noise level"),
    "num_noise_levels": ("L", "number of noise levels"),
    "steps_per_level": ("T", "Langevin steps per level"),
    "epsilon": ("ε", "step size, α_i = ε σ_i² / σ_L²"),
    "langevin_convention": ("", "`official`: x + α s + √(2α) z; `paper`: x + α/2 s + √α z"),
    "final_denoise": ("", "one Tweedie step x + σ_L² s at the end"),
    "prediction_type": ("", "what the network outputs"),
    "noise_space": ("", "`ve`: x + σ z (NCSN); `vp`: √ᾱ x + √(1 − ᾱ) z (DDPM)"),
    "initial_distribution": ("", "start of the chain"),
    "data_range": ("", "range of the training data"),
    "num_train_timesteps": ("", "DDPM timesteps (VP)"),
    "beta_start": ("β_1", "first DDPM beta (VP)"),
    "beta_end": ("β_T", "last DDPM beta (VP)"),
    "beta_schedule": ("", "DDPM beta schedule (VP)"),
    "trained_betas": ("", "explicit DDPM betas (VP)"),
}
# The objective of a score network, by `training["objective"]` (train_ncsn.py --objective); DSM when not given.
SCORE_OBJECTIVE_TEXT = {
    "dsm": "denoising score matching over the noise ladder, ℓ(θ; σ) = ½ E ‖σ s_θ(x + σz, σ) + z‖²",
    "ssm": "sliced score matching (variance-reduced) over the noise ladder, "
    "ℓ(θ; σ) = σ² E[vᵀ ∇ₓs_θ(x + σz, σ) v + ½ ‖s_θ(x + σz, σ)‖²] (projections v ~ N(0, I))",
}
# The keys a `ScoreSdeVeScheduler` config names differently from the package's samplers.
SCORE_SDE_VE_KEYS = {
    "num_train_timesteps": ("N", "noise levels of the chain (`num_inference_steps` of `ScoreSdeVePipeline`)"),
    "snr": ("r", "signal-to-noise ratio that sets the corrector's step"),
    "correct_steps": ("", "Langevin corrector steps per level"),
    "sampling_eps": ("", "end of diffusers' continuous time t (its smallest sigma is sigma(t))"),
}
PREDICTION_TEXT = {
    "score": "The network outputs the score s_θ(x, σ) itself.",
    "epsilon": "The network outputs ε_θ(x, σ) = −σ s_θ(x, σ), which the scheduler turns into the score.",
    "sample": "The network outputs the denoised x̂_0 = x + σ² s_θ(x, σ), which the scheduler turns into the score.",
}
_BLOCK = re.compile(r"^<!-- if (\w+) -->\n(.*?)^<!-- endif -->\n", re.DOTALL | re.MULTILINE)
_TEMPLATE_NOTE = re.compile(r"<!--\nTemplate of .*?-->\n\n", re.DOTALL)


# The template, a file of the package (so the wheel carries it like any module).
TEMPLATE = Path(__file__).with_name("pipeline_card_template.md")


def _format(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"{len(value)} values"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_format(v).strip("`") for v in value) + ")"
    return str(value)


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _public(config: dict) -> dict:
    return {key: value for key, value in config.items() if not key.startswith("_")}


def _sample_shape(unet_config: dict) -> tuple[int, int, int]:
    size = unet_config.get("sample_size")
    if size is None:
        raise ValueError("unet_config has no `sample_size`; save the U-Net with its sample_size set, e.g. 32.")
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return unet_config.get("in_channels", 3), height, width


def _data_range(scheduler_config: dict) -> tuple[float, float]:
    # The scheduler's own default when the config leaves it out: (0, 1) for VE (the papers'), (-1, 1) for VP.
    default = (-1.0, 1.0) if scheduler_config.get("noise_space", "ve") == "vp" else (0.0, 1.0)
    low, high = scheduler_config.get("data_range") or default
    return float(low), float(high)


def _scheduler_table(scheduler_config: dict) -> str:
    config = _public(scheduler_config)
    keys = SCHEDULER_KEYS
    if scheduler_config.get("_class_name") == SCORE_SDE_VE_SCHEDULER:
        keys = {**SCHEDULER_KEYS, **SCORE_SDE_VE_KEYS}
    rows = [(f"`{k}`", symbol, _format(config[k]), meaning) for k, (symbol, meaning) in keys.items() if k in config]
    if "data_range" in config and config["data_range"] is None:
        low, high = _data_range(config)
        rows = [
            row[:2] + (f"— (so [{low:g}, {high:g}])",) + row[3:] if row[0] == "`data_range`" else row for row in rows
        ]
    rows += [(f"`{key}`", "", _format(value), "") for key, value in config.items() if key not in keys]
    is_langevin = scheduler_config.get("_class_name", "AnnealedLangevinScheduler") == "AnnealedLangevinScheduler"
    if (
        is_langevin
        and config.get("noise_space", "ve") == "ve"
        and {"sigma_max", "sigma_min", "num_noise_levels", "epsilon"} <= set(config)
    ):
        sigma_1, sigma_L, L = config["sigma_max"], config["sigma_min"], config["num_noise_levels"]
        alpha_1 = config["epsilon"] * sigma_1**2 / sigma_L**2
        rows.append(("derived", "α_1", _format(float(alpha_1)), "step size at the largest level"))
        if L > 1:
            ratio = math.exp(math.log(sigma_1 / sigma_L) / (L - 1))
            rows.append(("derived", "σ_{i-1} / σ_i", _format(ratio), "constant ratio of the geometric ladder"))
    return _table(("Config key", "Symbol", "Value", "Meaning"), rows)


def _is_diffusers_scheduler(scheduler_config: dict) -> bool:
    """A scheduler of diffusers itself (DDIMScheduler, DDPMScheduler, ...), not one of this package's samplers."""
    return scheduler_config.get("_class_name", "AnnealedLangevinScheduler") not in SCORE_SCHEDULER_NAMES


def _num_model_calls(scheduler_config: dict, num_inference_steps: int | None = None) -> int:
    """The calls of a call without `num_inference_steps`: the pipeline's saved default, else the scheduler's chain."""
    if num_inference_steps is not None:
        return num_inference_steps
    if scheduler_config.get("_class_name") == SCORE_SDE_VE_SCHEDULER:  # a corrector and a predictor call per level
        return scheduler_config.get("num_train_timesteps", 2000) * (scheduler_config.get("correct_steps", 1) + 1)
    if _is_diffusers_scheduler(scheduler_config):
        return scheduler_config.get("num_train_timesteps", 1000)
    levels, denoise = scheduler_config.get("num_noise_levels", 10), bool(scheduler_config.get("final_denoise", False))
    sampler = scheduler_config.get("_class_name", "AnnealedLangevinScheduler")
    if sampler == "PredictorCorrectorScheduler":  # k correctors and one predictor per level; no extra denoising call
        return levels * (scheduler_config.get("corrector_steps", 1) + 1)
    if sampler == "ConsistentAnnealedSamplingScheduler":
        return levels + int(denoise)
    if sampler == "StochasticHeunScheduler":  # an Euler and a Heun call per level, the last level Euler's alone
        return 2 * scheduler_config.get("num_noise_levels", 18) - 1
    if sampler == "LogSigmaMultistepScheduler":  # one call per sigma, the last returning D
        return scheduler_config.get("num_noise_levels", 10)
    return levels * scheduler_config.get("steps_per_level", 100) + int(denoise)


def _sampler_call(scheduler_config: dict, sample_shape: str) -> str:
    """The card's torch-only sampling line for the sampler it ships, runnable as printed: the predictor-corrector
    loop for a PC config, annealed Langevin for its own config, and for any other annealed Langevin with 50 levels of
    20 steps of a stable relative step (0.2 sigma_L**2) over the config's sigma range."""
    model, shape = "lambda x, sigma: unet(x, sigma).sample", f"(4, {sample_shape})"
    sampler = scheduler_config.get("_class_name", "AnnealedLangevinScheduler")
    if sampler == "PredictorCorrectorScheduler":
        return f"predictor_corrector({model}, cfg, {shape}, generator)"
    if sampler == "AnnealedLangevinScheduler":
        return f"annealed_langevin({model}, cfg, {shape}, generator)"
    langevin = '{**cfg, "num_noise_levels": 50, "steps_per_level": 20, "relative_epsilon": 0.2}'
    return f"annealed_langevin({model}, {langevin}, {shape}, generator)  # {sampler}: as annealed Langevin"


def _epsilon_sampler_text(scheduler_config: dict, num_calls: int) -> str:
    """How the card's epsilon model samples: diffusers' own scheduler it ships, or annealed Langevin (VP)."""
    name = scheduler_config.get("_class_name", "AnnealedLangevinScheduler")
    if _is_diffusers_scheduler(scheduler_config):
        return (
            f"sampled with diffusers' own `{name}` at {num_calls} network calls, the best measured sampler for "
            "this model (ncsn-diffusers' docs/sampling.md). Its score s(x_t, t) = −ε_θ(x_t, t) / √(1 − ᾱ_t) drives "
            "the package's annealed Langevin sampler too (`AnnealedLangevinScheduler.from_config` of the DDPM "
            "schedule)."
        )
    return (
        "packaged to be sampled with **annealed Langevin dynamics** (Song & Ermon, 2019). Its score is "
        "s(x_t, t) = −ε_θ(x_t, t) / √(1 − ᾱ_t), so the Langevin sampler runs on L of the DDPM noise levels."
    )


def _dataset_text(datasets: list[str], training: dict, image_description: str) -> str:
    named = [KNOWN_DATASETS.get(name, f"[{name}](https://huggingface.co/datasets/{name})") for name in datasets]
    if not named and training.get("dataset"):
        named = [str(training["dataset"])]
    text = ", ".join(named) if named else "not recorded"
    if training.get("num_images"):
        text += f"; the run trained on {training['num_images']:,} images at {image_description}"
    return text + "."


def _sampler_text(scheduler_config: dict) -> str:
    name = scheduler_config.get("_class_name", "AnnealedLangevinScheduler")
    return SAMPLER_TEXT.get(name, f"diffusers' `{name}`")


def _sigma_sampling_text(training: dict) -> str:
    sampling = training.get("sigma_sampling")
    if sampling not in SIGMA_SAMPLING_TEXT:
        return "σ drawn over the noise range (the distribution was not recorded)"
    values = {key: _format(training.get(key)) for key in ("log_sigma_mean", "log_sigma_std")}
    return Template(SIGMA_SAMPLING_TEXT[sampling]).substitute(values)


def _size_text(training: dict) -> str:
    if training.get("num_images"):
        return f"This one was trained on {training['num_images']:,} images: a model"
    return "A model"


def _results_table(results: dict | None) -> str:
    rows = [
        (name, "not measured" if value is None else _format(value).strip("`"))
        for name, value in (results or {}).items()
    ]
    return _table(("Metric", "Value"), rows or [("—", "not measured")])


def _training_table(training: dict | None) -> str:
    if not training:
        return "Training settings were not recorded."
    return _table(("Training setting", "Value"), [(f"`{key}`", _format(value)) for key, value in training.items()])


def render_model_card(
    unet_config: dict,
    scheduler_config: dict,
    repo_id: str | None = None,
    training: dict | None = None,
    results: dict | None = None,
    license: str = "apache-2.0",  # noqa: A002 - the Hub metadata field's name
    datasets: list[str] | None = None,
    num_inference_steps: int | None = None,
) -> str:
    """
    Renders the Hub model card (README.md with YAML metadata) of a saved NCSN or epsilon model. Needs no network.

    Args:
        unet_config (`dict`):
            The U-Net's config with its class name (`json.loads(unet.to_json_string())` or `unet/config.json`;
            `unet.config` itself lacks `_class_name`). The class, `NCSNUNet2DModel` (score network) or
            `UNet2DModel` (DDPM epsilon network), selects the loading instructions.
        scheduler_config (`dict`):
            The scheduler's config (`scheduler.config`, `json.loads(scheduler.to_json_string())` or
            `scheduler/scheduler_config.json`), shown as a table. A `ScoreSdeVeScheduler`'s (a folder in diffusers'
            `ScoreSdeVePipeline` layout) gives a card whose diffusers-only snippet is that pipeline.
        repo_id (`str`, *optional*):
            The Hub repo (or local folder) the code snippets load from; a placeholder when `None`.
        training (`dict`, *optional*):
            Training settings (data set, steps, batch size, ...), shown as a table.
        results (`dict`, *optional*):
            Measured metrics by name; a `None` value or a missing dict reads "not measured".
        license (`str`, defaults to `"apache-2.0"`):
            The license identifier in the metadata.
        datasets (`list[str]`, *optional*):
            Training data set names for the metadata, e.g. `["sklearn-digits"]`; when `None`, the `dataset_name`
            of `training` if given.
        num_inference_steps (`int`, *optional*):
            The network calls of a call without `num_inference_steps` (the sampler's saved `default_num_inference_steps`);
            when `None`, those of the scheduler's configured chain.

    Returns:
        `str`: the card, Markdown with a YAML metadata header.
    """
    class_name = unet_config.get("_class_name")
    if class_name not in MODEL_KINDS:
        raise ValueError(
            f"unet_config['_class_name'] is {class_name!r}; pass the U-Net's config with its class name, "
            f"json.loads(unet.to_json_string()) or the saved unet/config.json, for a class in {sorted(MODEL_KINDS)}."
        )
    if not license:
        raise ValueError("license must be a license identifier such as 'apache-2.0'.")
    kind = MODEL_KINDS[class_name]
    if unet_config.get("time_embedding_type") == "fourier":  # NCSN++ UNet2DModel (google/ncsnpp): it returns the score
        kind = "score"
    if datasets is None and training and training.get("dataset_name"):
        datasets = [str(training["dataset_name"])]
    metadata = ModelCardData(
        license=license,
        library_name="diffusers",
        pipeline_tag="unconditional-image-generation",
        tags=_tags(kind, scheduler_config),
        datasets=list(datasets) if datasets else None,
    ).to_yaml()
    values = {
        "metadata": metadata,
        **_model_values(unet_config, scheduler_config, repo_id, num_inference_steps),
        **_training_values(training or {}, results, list(datasets or []), unet_config),
    }
    return Template(_template_text(kind, class_name, scheduler_config)).substitute(values)


def _tags(kind: str, scheduler_config: dict) -> list[str]:
    if scheduler_config.get("_class_name") == SCORE_SDE_VE_SCHEDULER:  # the Hub reads the pipeline from this tag
        return [tag if tag != "diffusers:NCSNPipeline" else "diffusers:ScoreSdeVePipeline" for tag in TAGS]
    return TAGS + (["ddpm"] if kind == "epsilon" else [])


def _model_values(unet_config: dict, scheduler_config: dict, repo_id: str | None, num_inference_steps) -> dict:
    """The template's values that describe the saved network and sampler."""
    class_name = unet_config["_class_name"]
    channels, height, width = _sample_shape(unet_config)
    colour = {1: "single-channel", 3: "RGB"}.get(channels, f"{channels}-channel")
    low, high = _data_range(scheduler_config)
    num_model_calls = _num_model_calls(scheduler_config, num_inference_steps)
    num_train_timesteps = scheduler_config.get("num_train_timesteps", 1000)
    is_diffusers = _is_diffusers_scheduler(scheduler_config)
    return {
        "title": repo_id.split("/")[-1]
        if repo_id
        else f"{class_name} sampled with {scheduler_config.get('_class_name', 'annealed Langevin dynamics')}",
        "repo_id": repo_id or "your-namespace/your-model",
        "unet_class": class_name,
        "scheduler_class": scheduler_config.get("_class_name", "scheduler"),
        "image_description": f"{height}×{width} {colour}",
        "sample_shape": f"{channels}, {height}, {width}",
        "sample_shape_text": f"{channels}×{height}×{width}",
        "data_range": f"[{low:g}, {high:g}]",
        "num_train_timesteps": num_train_timesteps,
        "prediction_text": PREDICTION_TEXT.get(scheduler_config.get("prediction_type", "score"), ""),
        "num_model_calls": num_model_calls,
        "diffusers_scheduler_class": scheduler_config["_class_name"] if is_diffusers else "DDPMScheduler",
        "sampler_text": _sampler_text(scheduler_config),
        "scheduler_table": _scheduler_table(scheduler_config),
        "unet_table": _table(("Key", "Value"), [(f"`{k}`", _format(v)) for k, v in _public(unet_config).items()]),
        "sampler_call": _sampler_call(scheduler_config, f"{channels}, {height}, {width}"),
        "epsilon_sampler_text": _epsilon_sampler_text(scheduler_config, num_model_calls),
        "epsilon_steps": num_model_calls if is_diffusers else num_train_timesteps,
        "score_sde_ve_levels": num_train_timesteps,
    }


def _training_values(training: dict, results: dict | None, datasets: list[str], unet_config: dict) -> dict:
    """The template's values that describe the training run and what it measured."""
    _, height, width = _sample_shape(unet_config)
    return {
        "score_objective_text": SCORE_OBJECTIVE_TEXT.get(training.get("objective"), SCORE_OBJECTIVE_TEXT["dsm"]),
        "dataset_text": _dataset_text(datasets, training, f"{height}×{width}"),
        "sigma_sampling_text": _sigma_sampling_text(training),
        "size_text": _size_text(training),
        "training_table": _training_table(training),
        "results_table": _results_table(results),
    }


def _template_text(kind: str, class_name: str, scheduler_config: dict) -> str:
    """The template without its leading note, with the blocks this model keeps (`<!-- if name -->`) and no other."""
    text = _TEMPLATE_NOTE.sub("", TEMPLATE.read_text(encoding="utf-8"), count=1)
    kept = {kind} | ({"remote_code"} if class_name in REMOTE_CODE_CLASSES else set())
    if kind == "score" and scheduler_config.get("_class_name") == SCORE_SDE_VE_SCHEDULER:
        kept.add("score_sde_ve")
    elif kind == "score":
        kept.add("score_loop")
        if scheduler_config.get("_class_name") == "PredictorCorrectorScheduler":
            kept.add("predictor_corrector")
    return _BLOCK.sub(lambda block: block.group(2) if block.group(1) in kept else "", text)


@dataclass
class PipelineCard:
    """
    What a pipeline's model card says beyond the pipeline's own components (see [`render_model_card`]).

    Args:
        training (`dict`, *optional*): training settings (data set, steps, batch size, ...), shown as a table.
        results (`dict`, *optional*): measured metrics by name; a `None` value reads "not measured".
        datasets (`list[str]`, *optional*): training data set names for the metadata, e.g. `["sklearn-digits"]`.
        license (`str`, defaults to `"apache-2.0"`): the license identifier in the metadata.
    """

    training: dict | None = None
    results: dict | None = None
    datasets: list[str] | None = None
    license: str = "apache-2.0"


def render_pipeline_card(pipeline, card: PipelineCard | None = None, repo_id: str | None = None) -> str:
    """[`render_model_card`] of a pipeline's U-Net and scheduler, its saved `default_num_inference_steps` and `card`."""
    card = card or PipelineCard()
    return render_model_card(
        unet_config=json.loads(pipeline.unet.to_json_string()),
        scheduler_config=json.loads(pipeline.scheduler.to_json_string()),
        repo_id=repo_id,
        training=card.training,
        results=card.results,
        license=card.license,
        datasets=card.datasets,
        num_inference_steps=saved_num_inference_steps(pipeline.scheduler),
    )


def save_pipeline_with_card(
    pipeline, save_directory, card: PipelineCard | None = None, repo_id: str | None = None, **save_kwargs
) -> Path:
    """
    Saves `pipeline` with its `save_pretrained` (`save_kwargs`: `safe_serialization`, `variant`, ...) and writes its
    filled-in model card, `README.md`, beside it.

    Args:
        pipeline ([`NCSNPipeline`]): the pipeline to save.
        save_directory (`str` or `os.PathLike`): the folder to save to.
        card ([`PipelineCard`], *optional*): what the card says of training, results, data sets and license.
        repo_id (`str`, *optional*): the Hub repo the card's snippets load from; a placeholder when `None`.

    Returns:
        `Path`: the written README.md.
    """
    pipeline.save_pretrained(save_directory, **save_kwargs)
    return write_card(save_directory, render_pipeline_card(pipeline, card, repo_id))


def write_model_card(save_directory, **kwargs) -> Path:
    """
    Writes `render_model_card(**kwargs)` to `save_directory/README.md`, where the Hub shows it as the model card.

    Args:
        save_directory (`str` or `os.PathLike`):
            The folder of the saved pipeline (created if missing).
        kwargs:
            The arguments of [`render_model_card`].

    Returns:
        `Path`: the written README.md.
    """
    return write_card(save_directory, render_model_card(**kwargs))
