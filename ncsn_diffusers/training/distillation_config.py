"""`--objective consistency_distillation`: its flags' defaults and checks, and the teacher read from its JSON only.

Called by `TrainingConfig.resolve`, so a refused teacher or flag fails before any network is built or file written.
"""

import json
from pathlib import Path

from huggingface_hub.errors import HfHubHTTPError

from ..pipelines.pipeline_folder import resolve_pipeline_folder
from ..pipelines.score_sde_ve_folder import converted_components
from .consistency_distillation import DISTANCES

OBJECTIVE = "consistency_distillation"

# The flags of this objective, and their defaults where they differ from the other objectives' (measured on the
# default run's network: docs/distillation.md).
DISTILLATION_FLAGS = ("teacher_model", "num_scales", "target_ema_rate", "distance", "sigma_data", "student_init")
DISTILLATION_FLAGS += ("quality_samples",)
DISTILLATION_DEFAULTS = {"train_batch_size": 32, "learning_rate": 1e-3, "max_train_steps": 2000}

# Teacher U-Net classes: the architecture a stock `UNet2DModel` student can copy, and the score networks it cannot.
COPYABLE_TEACHERS = ("NCSNUNet2DModel",)
SCORE_TEACHERS = COPYABLE_TEACHERS + ("NCSNv2Model",)


def read_teacher(teacher_model: str) -> dict:
    """The teacher's folder and the configs of its U-Net and scheduler (JSON only: no weights are loaded).

    Raises:
        `ValueError`: naming --teacher_model, for a folder that is not a saved score-model pipeline of this package.
    """
    try:
        folder = Path(resolve_pipeline_folder(teacher_model))
    except ValueError as err:
        raise ValueError(f"--teacher_model {teacher_model}: {err}") from None
    except (OSError, HfHubHTTPError) as err:  # a mistyped id: not found locally, on the Hub, or in the offline cache
        raise ValueError(
            f"--teacher_model {teacher_model}: no such folder, and the Hub has no such repo (or cannot be reached: "
            f"{type(err).__name__}). Pass the folder of a saved score pipeline or its Hub repo id."
        ) from None
    for config in ("unet/config.json", "scheduler/scheduler_config.json"):
        if not (folder / config).is_file():
            raise ValueError(f"--teacher_model {teacher_model} lacks {config}; save the teacher with save_pretrained.")
    if not any(path.suffix in (".safetensors", ".bin") for path in (folder / "unet").iterdir()):
        raise ValueError(
            f"--teacher_model {teacher_model} has no weights in unet/ (diffusion_pytorch_model.safetensors); save the "
            "teacher with save_pretrained."
        )
    unet = json.loads((folder / "unet" / "config.json").read_text())
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    converted = converted_components(folder)  # a ScoreSdeVe folder: sampled as the package's PC (data in [0, 1])
    if "scheduler" in converted:
        scheduler = json.loads(converted["scheduler"].to_json_string())
    return {"folder": str(folder), "unet": unet, "scheduler": scheduler}


def check_teacher(teacher: dict, teacher_model: str) -> None:
    """Refuses a teacher whose probability-flow ODE this objective cannot take, with the reason and the fix."""
    name = teacher["unet"].get("_class_name")
    scheduler = teacher["scheduler"]
    if name == "NCSNRefineNet":
        raise ValueError(
            f"--teacher_model {teacher_model} is NCSN v1's RefineNet, which is conditioned on the index of one of its "
            "trained noise levels: the ODE needs the score at every sigma in between. Distil a continuous score "
            "model (train one with `--objective dsm`, the default) or an NCSNv2Model."
        )
    # an NCSN++ UNet2DModel (Fourier embedding of sigma, a ScoreSdeVe folder's) returns the score; any other is DDPM's
    score_unet2d = name == "UNet2DModel" and teacher["unet"].get("time_embedding_type") == "fourier"
    ddpm_unet = name == "UNet2DModel" and not score_unet2d
    if ddpm_unet or scheduler.get("prediction_type") == "epsilon" or scheduler.get("noise_space") == "vp":
        raise ValueError(
            f"--teacher_model {teacher_model} is a DDPM epsilon model (VP coordinates); consistency distillation "
            "here takes a VE score model s_theta(x, sigma). Distil a model trained with `--objective dsm`, or use "
            "diffusers' own consistency training for DDPM models."
        )
    if name not in SCORE_TEACHERS and not score_unet2d:
        raise ValueError(
            f"--teacher_model {teacher_model} holds a {name}; consistency distillation takes a saved score-model "
            f"pipeline of this package whose U-Net is one of {', '.join(SCORE_TEACHERS)}."
        )
    if scheduler.get("prediction_type", "score") != "score":
        raise ValueError(
            f"--teacher_model {teacher_model}: its scheduler's prediction_type is {scheduler['prediction_type']!r}; "
            "the teacher must output the score (prediction_type 'score')."
        )
    if not 0 < scheduler.get("sigma_min", 0) < scheduler.get("sigma_max", 0):
        raise ValueError(f"--teacher_model {teacher_model}: its scheduler records no sigma_min < sigma_max.")
    low, high = teacher_data_range(scheduler)
    if (low, high) not in ((-1.0, 1.0), (0.0, 1.0)):
        raise ValueError(
            f"--teacher_model {teacher_model} was trained on data in [{low}, {high}]; only [-1, 1] (diffusers') and "
            "[0, 1] (the --recipe models, converted) can be mapped to the student's [-1, 1]."
        )


def check_apart(teacher_folder: str, output_dir: str, teacher_model: str) -> None:
    """Refuses an --output_dir that is the teacher's folder, inside it or around it: the student would be saved over
    the teacher (with --overwrite_output_dir) or among its files."""
    teacher, output = Path(teacher_folder).resolve(), Path(output_dir).resolve()
    if teacher == output or teacher in output.parents or output in teacher.parents:
        where = "is" if teacher == output else "is inside" if teacher in output.parents else "holds"
        raise ValueError(
            f"--output_dir {output_dir} {where} the teacher's folder (--teacher_model {teacher_model}, {teacher}): "
            "the student would be written over or among the teacher's files. Pass an --output_dir outside it."
        )


def teacher_data_range(scheduler_config: dict) -> tuple[float, float]:
    """The teacher's data range as its scheduler applies it: `data_range`, else that class's default ([0, 1] for
    `AnnealedLangevinScheduler` in VE, the papers'; [-1, 1] for the EDM-style samplers, which record none)."""
    value = scheduler_config.get("data_range")
    if value is None:
        langevin = scheduler_config.get("_class_name", "AnnealedLangevinScheduler") == "AnnealedLangevinScheduler"
        value = (0.0, 1.0) if langevin else (-1.0, 1.0)
    return float(value[0]), float(value[1])


def refuse_distillation_flags(config, explicit: set[str]) -> None:
    """Refuses the distillation flags given explicitly on a run of another objective (they would be ignored)."""
    # --sigma_data is also --preconditioning edm's (`derived_settings.check_preconditioning` checks that run)
    shared = ("sigma_data",) if config.preconditioning is not None else ()
    given = [f"--{name}" for name in DISTILLATION_FLAGS if name in explicit and name not in shared]
    if given:
        raise ValueError(
            f"{', '.join(given)} only apply to --objective {OBJECTIVE}; add it or drop them "
            f"(this run is --objective {config.objective})."
        )


def resolve_distillation(config, explicit: set[str]) -> None:
    """Fills this objective's defaults on `config` and checks its flags and teacher."""
    if config.teacher_model is None:
        raise ValueError(f"--objective {OBJECTIVE} needs --teacher_model DIR, a saved NCSN score pipeline or Hub id.")
    refused = [
        ("recipe", config.recipe is not None, "the student is a stock UNet2DModel in [-1, 1]"),
        ("model_type", config.model_type != "unet", "the student is a stock UNet2DModel"),
        ("save_images_steps", config.save_images_steps != 0, "the final grid is saved (1 call)"),
    ]
    for flag, bad, why in refused:
        if bad:
            raise ValueError(f"--{flag} does not apply to --objective {OBJECTIVE} ({why}); drop it.")
    check_distance(config)
    teacher = read_teacher(config.teacher_model)
    check_teacher(teacher, config.teacher_model)
    check_apart(teacher["folder"], config.output_dir, config.teacher_model)
    resolve_student(config, teacher, explicit)
    for name, value in DISTILLATION_DEFAULTS.items():
        if name not in explicit and not (name == "max_train_steps" and "num_epochs" in explicit):
            setattr(config, name, value)


def check_distance(config) -> None:
    """Refuses a distance d the loss does not know (the numeric flags' ranges are in `flag_ranges.py`)."""
    if config.distance not in DISTANCES:
        raise ValueError(f"--distance must be one of {', '.join(DISTANCES)}, got {config.distance!r}.")


def resolve_student(config, teacher: dict, explicit: set[str]) -> None:
    """`--student_init` (the teacher's weights when they can be copied) and the teacher's resolution and channels."""
    copyable = teacher["unet"]["_class_name"] in COPYABLE_TEACHERS
    if config.student_init is None:
        config.student_init = "teacher" if copyable else "random"
    if config.student_init not in ("teacher", "random"):
        raise ValueError(f"--student_init must be 'teacher' or 'random', got {config.student_init!r}.")
    if config.student_init == "teacher" and not copyable:
        raise ValueError(
            f"--student_init teacher: the teacher's {teacher['unet']['_class_name']} has no UNet2DModel counterpart "
            "to copy; pass --student_init random (the student is then --model_preset's UNet2DModel)."
        )
    if config.student_init == "teacher" and "model_preset" in explicit:
        raise ValueError(
            f"--model_preset {config.model_preset} would be ignored: --student_init teacher copies the teacher's "
            "architecture and weights. Drop it, or pass --student_init random to train --model_preset's U-Net."
        )
    size, channels = teacher["unet"].get("sample_size"), teacher["unet"].get("in_channels")
    for flag, value in (("resolution", size), ("channels", channels)):
        if value is None:
            continue
        if flag in explicit and getattr(config, flag) != value:
            raise ValueError(
                f"--{flag} {getattr(config, flag)} differs from the teacher's {value}; drop --{flag} (the teacher's "
                "is used) or distil a teacher trained on such data."
            )
        setattr(config, flag, value)
