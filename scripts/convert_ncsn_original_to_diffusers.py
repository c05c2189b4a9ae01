"""Converts a checkpoint of the authors' NCSN (ermongroup/ncsn) or NCSNv2 (ermongroup/ncsnv2) code to an NCSNPipeline.

    python scripts/convert_ncsn_original_to_diffusers.py --checkpoint_path checkpoint.pth \
        --config_path cifar10.yml --dump_path ncsnv2-cifar10

The checkpoint is the `states` list their runners save (`[model, optimizer, ...]`, for NCSNv2 with the EMA weights
last), read with `torch.load(..., weights_only=True)` (never unpickled: docs/security.md); the config is their YAML
file. The result is a folder with the network (safetensors), an AnnealedLangevinScheduler carrying the config's
sampling settings in the authors' convention, and a model card naming the source. --dump_path must be new or empty;
with --overwrite the converted files replace their namesakes there, and no other file is deleted.
"""

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from ncsn_diffusers import AnnealedLangevinScheduler, NCSNPipeline, NCSNRefineNet, NCSNv2Model
from ncsn_diffusers.hub import PipelineCard, save_pipeline_with_card
from ncsn_diffusers.training.run_dir import OutputDirLock, refuse_symlinks

# NCSN v1's sampler is not in its config: anneal_runner.py runs T = 100 steps of step_lr = 2e-5 and no denoising.
# What the converter writes in --dump_path (an NCSNPipeline's `save_pretrained`).
WRITTEN = ("model_index.json", "README.md", "unet", "scheduler")
V1_SAMPLING = {"n_steps_each": 100, "step_lr": 2e-5, "denoise": False}
# Which NCSNv2 network the authors' runner builds for each data set (`get_model` in runners/ncsn_runner.py).
V2_VARIANTS = {"CIFAR10": "ncsnv2", "CELEBA": "ncsnv2", "LSUN": "ncsnv2_deeper", "FFHQ": "ncsnv2_deepest"}
# Their encoder stages (`res<name>`) from the input down, and refine blocks (`refine<name>`) in the order they run.
STAGE_NAMES = {
    "v1": ("1", "2", "3", "4"),
    "ncsnv2": ("1", "2", "3", "4"),
    "ncsnv2_deeper": ("1", "2", "3", "4", "5"),
    "ncsnv2_deepest": ("1", "2", "3", "31", "4", "5"),
}
REFINE_NAMES = {**STAGE_NAMES, "ncsnv2_deepest": ("1", "2", "31", "3", "4", "5")}
TOP_LEVEL = {"begin_conv": "conv_in", "end_conv": "conv_out", "normalizer": "norm_out"}
ARCHITECTURE = {
    "normalization": "InstanceNorm++",
    "nonlinearity": "elu",
    "spec_norm": False,
    "sigma_dist": "geometric",
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_path", required=True, help="The authors' checkpoint (.pth, a `states` list).")
    parser.add_argument(
        "--config_path", required=True, help="The authors' YAML config the checkpoint was trained with."
    )
    parser.add_argument("--dump_path", required=True, help="Folder to write the NCSNPipeline to (new or empty).")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Write into a non-empty --dump_path: the converted files replace those of the same name; every other "
        "file there is kept (and listed).",
    )
    parser.add_argument(
        "--version",
        choices=("v1", "v2"),
        default=None,
        help="NCSN v1 (ermongroup/ncsn) or NCSNv2 (ermongroup/ncsnv2); guessed from the config when omitted.",
    )
    parser.add_argument("--no_ema", action="store_true", help="NCSNv2: keep the raw weights, not the EMA ones.")
    return parser.parse_args(argv)


def load_config(path: str | Path) -> dict:
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ValueError(
            f"--config_path {path} could not be read as YAML ({err}); pass the authors' .yml file."
        ) from err
    if not isinstance(config, dict):
        raise ValueError(f"--config_path {path} is not an NCSN config (a YAML mapping with `data` and `model`).")
    missing = [section for section in ("data", "model") if not isinstance(config.get(section), dict)]
    if missing:
        raise ValueError(f"{path} is not an NCSN config: it lacks the section(s) {missing}.")
    return config


def guess_version(config: dict) -> str:
    # NCSNv2 configs carry a `sampling` section and the ladder's `sigma_dist`; v1's anneal.yml has neither.
    return "v2" if "sampling" in config or "sigma_dist" in config["model"] else "v1"


def _require(section: dict, keys: tuple[str, ...], where: str):
    missing = [key for key in keys if key not in section]
    if missing:
        raise ValueError(f"The config's `{where}` section lacks {missing}.")


def build_network(config: dict, version: str) -> tuple[torch.nn.Module, str]:
    """The diffusers network for `config`, freshly initialised, and the name of its layout (for key renaming)."""
    data, model = config["data"], config["model"]
    _require(data, ("image_size", "channels"), "data")
    _require(model, ("ngf", "num_classes", "sigma_begin", "sigma_end"), "model")
    if data.get("logit_transform", False):
        raise ValueError("The config sets `logit_transform: true`; only data in [0, 1] or [-1, 1] is supported.")
    common = {"sample_size": data["image_size"], "in_channels": data["channels"], "base_channels": model["ngf"]}
    rescale_input = not data.get("rescaled", False)
    if version == "v1":
        network = NCSNRefineNet(
            **common,
            sigma_max=float(model["sigma_begin"]),
            sigma_min=float(model["sigma_end"]),
            num_noise_levels=int(model["num_classes"]),
            rescale_input=rescale_input,
        )
        return network, "v1"
    unsupported = {k: model.get(k) for k, v in ARCHITECTURE.items() if model.get(k, v) != v}
    if unsupported:
        raise ValueError(f"Unsupported NCSNv2 architecture settings {unsupported}; supported: {ARCHITECTURE}.")
    variant = V2_VARIANTS.get(data.get("dataset"))
    if variant is None:
        raise ValueError(
            f"data.dataset={data.get('dataset')!r}: the authors' runner builds a network only for {sorted(V2_VARIANTS)}."
        )
    return NCSNv2Model.from_variant(variant, **common, rescale_input=rescale_input), variant


def build_scheduler(config: dict, version: str) -> AnnealedLangevinScheduler:
    """The annealed Langevin sampler of the config, in the authors' convention (x + alpha s + sqrt(2 alpha) z)."""
    model = config["model"]
    sampling = config.get("sampling", V1_SAMPLING) if version == "v2" else V1_SAMPLING
    _require(sampling, ("n_steps_each", "step_lr"), "sampling")
    rescaled = config["data"].get("rescaled", False)
    return AnnealedLangevinScheduler(
        sigma_max=float(model["sigma_begin"]),
        sigma_min=float(model["sigma_end"]),
        num_noise_levels=int(model["num_classes"]),
        steps_per_level=int(sampling["n_steps_each"]),
        epsilon=float(sampling["step_lr"]),
        langevin_convention="official",
        final_denoise=bool(sampling.get("denoise", False)),
        initial_distribution="uniform",  # their samplers start from torch.rand (then data_transform)
        data_range=(-1.0, 1.0) if rescaled else (0.0, 1.0),
    )


def official_state_dict(states, version: str, use_ema: bool) -> dict[str, torch.Tensor]:
    """The model weights of a `states` list (or a bare state dict), without DataParallel's `module.` prefix."""
    if isinstance(states, dict):
        states = [states]
    if not isinstance(states, (list, tuple)) or not states or not isinstance(states[0], dict):
        raise ValueError("The checkpoint is neither the authors' `states` list nor a state dict.")
    weights = {_strip_prefix(k): v for k, v in states[0].items()}
    if version == "v2" and use_ema and len(states) >= 5 and isinstance(states[-1], dict):
        # Their EMAHelper keeps one shadow tensor per parameter; their sampler copies it over the weights.
        shadow = {_strip_prefix(k): v for k, v in states[-1].items()}
        unknown = sorted(set(shadow) - set(weights))
        if unknown:
            raise ValueError(f"The checkpoint's EMA weights name parameters the model lacks: {unknown}.")
        weights.update(shadow)
    return weights


def _strip_prefix(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def rename_key(key: str, layout: str) -> str | None:
    """The diffusers name of one of the authors' weights, or None for a key they have and we do not."""
    head, _, rest = key.partition(".")
    if head in TOP_LEVEL:
        return f"{TOP_LEVEL[head]}.{rest}"
    match = re.fullmatch(r"(res|refine)(\d+)", head)
    if match is None:
        return None
    kind, name = match.groups()
    names = (STAGE_NAMES if kind == "res" else REFINE_NAMES)[layout]
    if name not in names:
        return None
    block = "down_blocks" if kind == "res" else "up_blocks"
    rest = rest.replace("normalize1.", "norm1.").replace("normalize2.", "norm2.")
    # RCU units: `<unit>_<stage>_conv` (1-based) -> `convs.<unit>.<stage>`
    rest = re.sub(r"(\d+)_(\d+)_(conv|norm)\.", lambda m: f"{m[3]}s.{int(m[1]) - 1}.{int(m[2]) - 1}.", rest)
    return f"backbone.{block}.{names.index(name)}.{rest}"


def convert_state_dict(weights: dict[str, torch.Tensor], network: torch.nn.Module, layout: str, config: dict):
    """Renames the authors' weights to `network`'s and checks that both sides name the same tensors."""
    if "sigmas" in weights:  # NCSNv2 keeps its ladder as a buffer; ours comes from the scheduler
        ladder = torch.exp(
            torch.linspace(
                torch.tensor(float(config["model"]["sigma_begin"])).log().item(),
                torch.tensor(float(config["model"]["sigma_end"])).log().item(),
                int(config["model"]["num_classes"]),
                dtype=torch.float64,
            )
        ).float()
        if weights["sigmas"].shape != ladder.shape or not torch.allclose(weights["sigmas"], ladder, rtol=1e-5):
            raise ValueError("The checkpoint's `sigmas` buffer is not the ladder of the config; pass its own config.")
        weights = {k: v for k, v in weights.items() if k != "sigmas"}
    renamed, unknown = {}, []
    for key, value in weights.items():
        new = rename_key(key, layout)
        (unknown.append(key) if new is None else renamed.__setitem__(new, value))
    expected = network.state_dict()
    unknown += [k for k in renamed if k not in expected]
    missing = sorted(set(expected) - set(renamed))
    if unknown or missing:
        raise ValueError(
            f"The checkpoint does not match the {layout} network of the config: unknown keys {sorted(unknown)}, "
            f"missing keys {missing}. Check --version and --config_path."
        )
    mismatched = [k for k, v in renamed.items() if v.shape != expected[k].shape]
    if mismatched:
        raise ValueError(
            "Shapes differ from the config's network for "
            + ", ".join(f"{k} {tuple(renamed[k].shape)} vs {tuple(expected[k].shape)}" for k in mismatched)
            + "; check ngf, channels and num_classes in --config_path."
        )
    network.load_state_dict(renamed, strict=True)


def check_dump_path(dump_path: str | Path, overwrite: bool):
    """Refuses a --dump_path that is a file, a non-empty folder without --overwrite, a folder a training run holds
    (its lock), or one whose `WRITTEN` entries are symbolic links (the files would go where they point); changes
    nothing."""
    dump_path = Path(dump_path)
    if dump_path.exists() and not dump_path.is_dir():
        raise ValueError(f"--dump_path {dump_path} is a file; pass a new or empty folder.")
    held = sorted(p.name for p in dump_path.iterdir()) if dump_path.is_dir() else []
    if held and not overwrite:
        raise ValueError(
            f"--dump_path {dump_path} is not empty ({', '.join(held[:5])}); pass a new or empty folder, or "
            "--overwrite to replace the files of the same names (the others are kept)."
        )
    try:
        OutputDirLock(dump_path).check_free()
    except RuntimeError as err:
        raise ValueError(f"--dump_path: {err}") from None
    refuse_symlinks(dump_path, WRITTEN, "--dump_path")


def load_states(checkpoint_path: str | Path):
    """The checkpoint's `states`, read with `weights_only=True` only: a failure names the file and the way out."""
    try:
        return torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise ValueError(f"--checkpoint_path {checkpoint_path} does not exist; pass the authors' .pth file.") from err
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for a bad file
        text = str(err) or "no message"
        # torch's message advises weights_only=False for any file it cannot read safely: say why we never do.
        why_not = (
            " The converter does not retry with weights_only=False, as torch's message suggests: unpickling runs "
            "whatever code the file names, so a checkpoint from the web could take over this machine."
            if "weights_only" in text
            else ""
        )
        unsupported = next((line.strip() for line in text.splitlines() if "Unsupported global" in line), None)
        if unsupported is None:
            raise ValueError(
                f"--checkpoint_path {checkpoint_path} could not be read by torch.load ({type(err).__name__}: "
                f"{text.splitlines()[0]}); pass the `checkpoint.pth` their runner saved, whole.{why_not}"
            ) from None
        raise ValueError(
            f"--checkpoint_path {checkpoint_path} holds objects other than tensors and plain containers, which "
            f"torch.load(weights_only=True) refuses ({unsupported}).{why_not} If you trust the file, keep only its "
            "tensors in a session of your own (`torch.save([s for s in torch.load(path, weights_only=False) if "
            "isinstance(s, dict)], 'clean.pth')`, dicts of tensors) and convert clean.pth."
        ) from None


def write_pipeline(pipeline: NCSNPipeline, dump_path: Path, card: PipelineCard) -> list[Path]:
    """Saves `pipeline` with its model card `card` beside --dump_path, then moves each of its files into place
    (replacing a file of the same name, deleting nothing else). Returns the files of --dump_path the converter did
    not write."""
    dump_path.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dump_path.name}.converting-", dir=dump_path.parent))
    try:
        save_pipeline_with_card(pipeline, staging, card)
        written = sorted(p.relative_to(staging) for p in staging.rglob("*") if p.is_file())
        with OutputDirLock(dump_path):  # no training run starts in it while the files move in
            refuse_symlinks(dump_path, WRITTEN, "--dump_path")  # none appeared since the check
            for name in written:
                (dump_path / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / name, dump_path / name)
    except RuntimeError as err:  # the lock: a training run took the folder after the check
        raise ValueError(f"--dump_path: {err}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # our own staging folder: what is left of it after the moves
    return sorted(p for p in dump_path.rglob("*") if p.is_file() and p.relative_to(dump_path) not in written)


def convert(checkpoint_path, config_path, dump_path, version=None, use_ema=True, overwrite=False) -> NCSNPipeline:
    check_dump_path(dump_path, overwrite)
    config = load_config(config_path)
    version = version or guess_version(config)
    network, layout = build_network(config, version)
    states = load_states(checkpoint_path)
    convert_state_dict(official_state_dict(states, version, use_ema), network, layout, config)
    pipeline = NCSNPipeline(unet=network.eval(), scheduler=build_scheduler(config, version))
    repository = "ermongroup/ncsn" if version == "v1" else "ermongroup/ncsnv2"
    ema = version == "v2" and use_ema and isinstance(states, (list, tuple)) and len(states) >= 5
    card = PipelineCard(
        training={
            "source": f"converted from the authors' checkpoint ({repository}, {Path(checkpoint_path).name})",
            "official config": Path(config_path).name,
            "dataset_name": config["data"].get("dataset"),
            "weights": "EMA" if ema else "raw",
        },
        license="gpl-3.0" if version == "v1" else "mit",  # the licenses of the authors' repositories
    )
    kept = write_pipeline(pipeline, Path(dump_path), card)
    if kept:
        print(
            f"Kept {len(kept)} file(s) in {dump_path} that the converter did not write: {', '.join(map(str, kept[:5]))}"
        )
    return pipeline


def main(argv=None):
    args = parse_args(argv)
    try:
        convert(
            args.checkpoint_path,
            args.config_path,
            args.dump_path,
            args.version,
            use_ema=not args.no_ema,
            overwrite=args.overwrite,
        )
    except ValueError as error:
        sys.exit(f"error: {error}")
    print(f"Saved an NCSNPipeline to {args.dump_path}")


if __name__ == "__main__":
    main()
