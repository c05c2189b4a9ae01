"""Converts a checkpoint of score_sde (yang-song/score_sde_pytorch: NCSN++ / DDPM++, VE, VP or sub-VP) to an
NCSNPipeline.

    python scripts/convert_score_sde_to_diffusers.py --checkpoint_path checkpoint_26.pth \
        --config configs/ve/cifar10_ncsnpp_continuous.py --dump_path ncsnpp-cifar10

The checkpoint is the dict their `run_lib` saves (`model`, `ema`, `optimizer`, `step`), read with
`torch.load(weights_only=True)` and an allow-list of the numpy types its optimizer's learning rate needs (never
unpickled: docs/security.md). The EMA weights are taken, as their sampler does. The config is their `.py` file; it is
code, so it is never run: its `config.x.y = literal` assignments are read with `ast`, on top of the
`get_default_configs()` of the `configs/default_*_configs.py` it imports (found from the config's folder upwards).

The result is a folder with an `NCSNppModel` (safetensors) that returns the VE score s(x, sigma) for every SDE, a
`PredictorCorrectorScheduler` with the config's sampler settings in VE coordinates (VP and sub-VP through x_VE =
x / alpha, sigma = std / alpha), and a model card naming the source. --dump_path must be new or empty; --overwrite
replaces the files of a folder this converter wrote before, and refuses any other folder.
"""

import argparse
import ast
import json
import sys
from pathlib import Path

import numpy as np
import torch
from convert_ncsn_original_to_diffusers import check_dump_path, write_pipeline

from ncsn_diffusers import NCSNPipeline, PredictorCorrectorScheduler
from ncsn_diffusers.hub import PipelineCard
from ncsn_diffusers.models.ncsnpp_blocks import (
    AttentionBlock,
    Combine,
    Downsample,
    ResnetBlock,
    Upsample,
)
from ncsn_diffusers.models.score_sde_noise import discrete_vp_tables, sigma_from_time
from ncsn_diffusers.models.unet_ncsn import Float32GaussianFourierProjection
from ncsn_diffusers.models.unet_ncsnpp import NCSNppModel
from ncsn_diffusers.schedulers.noise_ladders import geometric_sigmas

SDE_NAMES = {"vesde": "ve", "vpsde": "vp", "subvpsde": "subvp"}
SAMPLING_EPS = {"ve": 1e-5, "vp": 1e-3, "subvp": 1e-3}  # the smallest t of their samplers (run_lib.py)
# their layer names inside each block -> ours; a NIN (W of shape (in, out), b) becomes a 1x1 convolution
RENAMES = {
    ResnetBlock: {"GroupNorm_0": "norm1", "Conv_0": "conv1", "Dense_0": "time_proj", "GroupNorm_1": "norm2",
                  "Conv_1": "conv2", "Conv_2": "skip_conv", "NIN_0": "skip_conv"},  # Conv_2: BigGAN's, NIN_0: DDPM's
    AttentionBlock: {"GroupNorm_0": "norm", "NIN_0": "query", "NIN_1": "key", "NIN_2": "value", "NIN_3": "proj_out"},
    Combine: {"Conv_0": "conv"},
    Upsample: {"Conv_0": "conv"},
    Downsample: {"Conv_0": "conv", "Conv2d_0": "conv"},
    Float32GaussianFourierProjection: {"W": "weight"},
}  # fmt: skip
SUPPORTED = {"name": "ncsnpp", "normalization": "GroupNorm", "attention_type": "ddpm"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint_path", required=True, help="Their checkpoint_N.pth (a dict with model, ema, ...)."
    )
    parser.add_argument("--config", "--config_path", dest="config", required=True, help="Their config .py file.")
    parser.add_argument("--dump_path", required=True, help="Folder to write the NCSNPipeline to (new or empty).")
    parser.add_argument("--overwrite", action="store_true", help="Replace the files of an earlier conversion there.")
    parser.add_argument("--no_ema", action="store_true", help="Keep the raw weights, not the EMA ones.")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------------- the config
class ConfigReader:
    """Reads `get_config()` / `get_default_configs()` of a score_sde config file without running it: each statement
    must be an assignment of a literal, a `ConfigDict()`, a config section or the imported defaults. Values that are
    not literals (`config.device = torch.device(...)`) are skipped; any other statement is refused."""

    SKIPPED = object()

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.tree = ast.parse(self.path.read_text(), filename=str(path))
        except (OSError, UnicodeDecodeError, SyntaxError) as err:
            raise ValueError(
                f"--config {path} could not be read as a Python file ({err}); pass their config .py."
            ) from None
        self.imports = {}
        for node in self.tree.body:
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    self.imports[alias.asname or alias.name] = node.module

    def read(self, function: str = "get_config") -> dict:
        body = next((n.body for n in self.tree.body if isinstance(n, ast.FunctionDef) and n.name == function), None)
        if body is None:
            raise ValueError(
                f"{self.path} defines no {function}(); pass a score_sde config file (configs/<sde>/*.py)."
            )
        names = {}
        for node in body:
            if isinstance(node, ast.Return):
                if not isinstance(node.value, ast.Name) or not isinstance(names.get(node.value.id), dict):
                    raise self._refuse(node, "returns something other than its config")
                return names[node.value.id]
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue  # a docstring
            if not isinstance(node, ast.Assign):
                raise self._refuse(node, "is not an assignment")
            value = self._value(node.value, names)
            for target in node.targets:
                self._assign(target, value, names)
        raise ValueError(f"{function}() of {self.path} returns nothing.")

    def _refuse(self, node, why: str) -> ValueError:
        line = ast.get_source_segment(self.path.read_text(), node) or ""
        return ValueError(
            f"{self.path}:{node.lineno} ({line.strip()[:80]!r}) {why}; the converter reads score_sde configs "
            "(`config.x.y = literal` assignments) without running them, and cannot follow this line."
        )

    def _value(self, node, names):
        if isinstance(node, ast.Call) and not node.args and not node.keywords:
            func = node.func
            if isinstance(func, ast.Name) and func.id in self.imports:
                return self._defaults(func.id)
            if isinstance(func, ast.Attribute) and func.attr == "ConfigDict":
                return {}
        if isinstance(node, (ast.Name, ast.Attribute)):
            try:
                return self._lookup(node, names)
            except KeyError:
                pass
        try:
            return ast.literal_eval(node)
        except ValueError:
            return self.SKIPPED

    def _lookup(self, node, names):
        if isinstance(node, ast.Name):
            return names[node.id]
        if isinstance(node, ast.Attribute):
            parent = self._lookup(node.value, names)
            if isinstance(parent, dict):
                return parent[node.attr]
        raise KeyError(ast.dump(node))

    def _assign(self, target, value, names):
        if value is self.SKIPPED:
            return
        if isinstance(target, ast.Name):
            names[target.id] = value
            return
        if isinstance(target, ast.Attribute):
            try:
                parent = self._lookup(target.value, names)
            except KeyError:
                parent = None
            if isinstance(parent, dict):
                parent[target.attr] = value
                return
        raise self._refuse(target, "assigns to something other than a config field")

    def _defaults(self, name: str) -> dict:
        module = self.imports[name]
        relative = Path(*module.split(".")).with_suffix(".py")
        for folder in [self.path.parent, *self.path.parent.parents][:4]:
            for candidate in (folder / relative, folder / relative.name):
                if candidate.is_file() and candidate.resolve() != self.path.resolve():
                    return ConfigReader(candidate).read(name)
        raise ValueError(
            f"{self.path} takes its defaults from `{module}` ({name}), which is not beside it: keep the config in "
            f"its folder of score_sde's configs/ (with {relative.name} one level up)."
        )


def load_config(path) -> dict:
    config = ConfigReader(Path(path)).read()
    missing = [s for s in ("training", "data", "model") if not isinstance(config.get(s), dict)]
    if missing:
        raise ValueError(f"--config {path} is not a score_sde config: it sets no {missing} section(s).")
    model = config["model"]
    unsupported = {k: model.get(k) for k, v in SUPPORTED.items() if model.get(k, v) != v}
    if unsupported:
        raise ValueError(
            f"--config {path} has {unsupported}; the converter covers score_sde's NCSN++ / DDPM++ networks "
            f"({SUPPORTED}), not their DDPM, NCSN or NCSNv2 baselines."
        )
    if config["training"].get("sde") not in SDE_NAMES:
        raise ValueError(f"training.sde={config['training'].get('sde')!r}; expected one of {sorted(SDE_NAMES)}.")
    return config


def network_kwargs(config: dict) -> dict:
    model, data, training = config["model"], config["data"], config["training"]
    keys = {
        "sample_size": data.get("image_size"), "in_channels": data.get("num_channels"),
        "base_channels": model.get("nf"), "channel_multipliers": model.get("ch_mult"),
        "num_res_blocks": model.get("num_res_blocks"), "attention_resolutions": model.get("attn_resolutions"),
        "dropout": model.get("dropout"), "resample_with_conv": model.get("resamp_with_conv"),
        "fir": model.get("fir"), "fir_kernel": model.get("fir_kernel"), "skip_rescale": model.get("skip_rescale"),
        "resblock_type": model.get("resblock_type"), "progressive": model.get("progressive"),
        "progressive_input": model.get("progressive_input"), "progressive_combine": model.get("progressive_combine"),
        "embedding_type": model.get("embedding_type"), "fourier_scale": model.get("fourier_scale"),
        "init_scale": model.get("init_scale"), "conv_size": model.get("conv_size"),
        "nonlinearity": model.get("nonlinearity"), "conditional": model.get("conditional"),
        "scale_by_sigma": model.get("scale_by_sigma"), "centered": data.get("centered"),
        "sde": SDE_NAMES[training["sde"]], "continuous": training.get("continuous"),
        "sigma_min": model.get("sigma_min"), "sigma_max": model.get("sigma_max"), "beta_min": model.get("beta_min"),
        "beta_max": model.get("beta_max"), "num_scales": model.get("num_scales"),
    }  # fmt: skip
    kwargs = {k: v for k, v in keys.items() if v is not None}
    for key in ("channel_multipliers", "attention_resolutions", "fir_kernel"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    for key in ("resblock_type", "progressive", "progressive_input", "progressive_combine", "embedding_type",
                "nonlinearity"):  # fmt: skip
        if key in kwargs:
            kwargs[key] = kwargs[key].lower()  # their code lower-cases these
    if kwargs["sde"] == "subvp":
        kwargs["continuous"] = True  # their score function treats every sub-VP model as continuous
    return kwargs


def build_scheduler(config: dict, network: NCSNppModel) -> PredictorCorrectorScheduler:
    """Their PC sampler's settings in VE coordinates: the sigma range of t in [eps, 1], N levels, the corrector."""
    c, sampling = network.config, config.get("sampling", {})
    if c.sde == "ve":
        sigma_max, sigma_min = c.sigma_max, c.sigma_min
    elif not c.continuous:
        sqrt_alphas, sqrt_1m_alphas = (
            table.double() for table in discrete_vp_tables(c.beta_min, c.beta_max, c.num_scales)
        )
        sigma_max, sigma_min = (float(sqrt_1m_alphas[k] / sqrt_alphas[k]) for k in (-1, 0))
    else:
        sde = dict(beta_min=c.beta_min, beta_max=c.beta_max)
        sigma_max, sigma_min = (float(sigma_from_time(c.sde, t, **sde)) for t in (1.0, SAMPLING_EPS[c.sde]))
    corrector = str(sampling.get("corrector", "none")).lower()
    return PredictorCorrectorScheduler(
        sigma_max=float(sigma_max),
        sigma_min=float(sigma_min),
        num_noise_levels=int(c.num_scales),
        corrector_steps=int(sampling.get("n_steps_each", 1)) if corrector in ("langevin", "ald") else 0,
        snr=float(sampling.get("snr", 0.16)),
        final_denoise=bool(sampling.get("noise_removal", True)),
        data_range=(-1.0, 1.0) if c.centered else (0.0, 1.0),
    )


# ------------------------------------------------------------------------------------------------ the checkpoint
def numpy_safe_globals() -> list:
    """Exactly what their optimizer's numpy float64 learning rate needs, under numpy 1.x and 2.x module names."""
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:
        from numpy.core.multiarray import scalar  # numpy 1.x
    return [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        type(np.dtype(np.float64)),  # numpy.dtypes.Float64DType, whose state the pickle sets
    ]


def load_checkpoint(path) -> dict:
    try:
        with torch.serialization.safe_globals(numpy_safe_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"--checkpoint_path {path} does not exist; pass their checkpoint_N.pth.") from None
    except Exception as err:  # UnpicklingError, RuntimeError, EOFError, ... for a bad file
        text = (str(err) or type(err).__name__).splitlines()
        unsupported = next((line.strip() for line in text if "Unsupported global" in line), None)
        raise ValueError(
            f"--checkpoint_path {path} could not be read with torch.load(weights_only=True) "
            f"({unsupported or text[0]}). The converter allows tensors, plain containers and numpy float64 scalars "
            "only, and never retries with weights_only=False: unpickling runs whatever code the file names."
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ValueError(f"--checkpoint_path {path} is not a score_sde checkpoint (a dict with `model`, `ema`, ...).")
    return state


def checkpoint_weights(state: dict, use_ema: bool, fourier: bool) -> dict[str, torch.Tensor]:
    """Their `model` weights without DataParallel's prefix, with the EMA shadow copied over the trainable ones: the
    shadow list follows `model.parameters()` minus the untrained `sigmas` buffer and Fourier `W`."""
    weights = {k.removeprefix("module."): v for k, v in state["model"].items()}
    if not use_ema:
        return weights
    shadow = (state.get("ema") or {}).get("shadow_params")
    if not isinstance(shadow, (list, tuple)):
        raise ValueError("The checkpoint has no ema.shadow_params list; pass --no_ema to convert the raw weights.")
    trainable = [k for k in weights if k != "sigmas" and not (fourier and k == "all_modules.0.W")]
    mismatched = len(shadow) != len(trainable) or any(s.shape != weights[k].shape for s, k in zip(shadow, trainable))
    if mismatched:
        raise ValueError(
            f"The checkpoint's ema.shadow_params ({len(shadow)} tensors) do not line up with its {len(trainable)} "
            "trainable weights; check --config (embedding_type) against the checkpoint."
        )
    return {**weights, **dict(zip(trainable, shadow))}


def module_order(network: NCSNppModel) -> list[str]:
    """Our module paths in the order of their `all_modules` list."""
    order = ["time_embedding"] if network.time_embedding is not None else []
    order += ["time_mlp.0", "time_mlp.1"] if network.time_mlp is not None else []
    order.append("conv_in")
    for i, level in enumerate(network.down_levels):
        for j in range(len(level.res_blocks)):
            order.append(f"down_levels.{i}.res_blocks.{j}")
            order += [f"down_levels.{i}.attentions.{j}"] if len(level.attentions) else []
        order += [f"down_levels.{i}.{n}" for n in ("downsample", "pyramid") if getattr(level, n) is not None]
    order += ["mid_block1", "mid_attention", "mid_block2"]
    for i, level in enumerate(network.up_levels):
        order += [f"up_levels.{i}.res_blocks.{j}" for j in range(len(level.res_blocks))]
        names = ("attention", "pyramid_norm", "pyramid_conv", "pyramid_upsample", "upsample")
        order += [f"up_levels.{i}.{n}" for n in names if getattr(level, n) is not None]
    return order + (["norm_out", "conv_out"] if network.norm_out is not None else [])


def convert_state_dict(weights: dict[str, torch.Tensor], network: NCSNppModel) -> dict[str, torch.Tensor]:
    """Their weights under our names, checked to name exactly our tensors with the same shapes."""
    c = network.config
    if "sigmas" in weights:  # their SMLD ladder, from the config: a different ladder means another config
        ladder = geometric_sigmas(c.sigma_max, c.sigma_min, c.num_scales)
        if weights["sigmas"].shape != ladder.shape or not torch.allclose(
            weights["sigmas"].double(), ladder, rtol=1e-5
        ):
            raise ValueError("The checkpoint's `sigmas` are not the ladder of --config (sigma_min, sigma_max, "
                             "num_scales); pass the config it was trained with.")  # fmt: skip
    order = module_order(network)
    converted, unknown = {}, []
    for key, value in weights.items():
        head, index, rest = (key.split(".", 2) + ["", ""])[:3]
        if key == "sigmas":
            continue
        if head != "all_modules" or not index.isdigit() or int(index) >= len(order):
            unknown.append(key)
            continue
        path = order[int(index)]
        layer, _, param = rest.partition(".")
        renames = RENAMES.get(type(network.get_submodule(path)), {})
        if layer in renames and not param:  # the Fourier W
            converted[f"{path}.{renames[layer]}"] = value
        elif layer in renames and layer.startswith("NIN"):
            converted[f"{path}.{renames[layer]}.{'weight' if param == 'W' else 'bias'}"] = (
                value.t()[:, :, None, None] if param == "W" else value
            )
        elif layer in renames:
            converted[f"{path}.{renames[layer]}.{param}"] = value
        else:
            converted[f"{path}.{rest}"] = value
    expected = network.state_dict()
    unknown += [k for k in converted if k not in expected]
    missing = sorted(set(expected) - set(converted))
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in converted.items()
              if k in expected and v.shape != expected[k].shape]  # fmt: skip
    if unknown or missing or shapes:
        raise ValueError(
            "The checkpoint does not match the network of --config: "
            + "; ".join(
                f"{what} {items[:6]}{' ...' if len(items) > 6 else ''}"
                for what, items in (("unknown keys", sorted(unknown)), ("missing", missing), ("shapes differ", shapes))
                if items
            )
            + ". Pass the config the checkpoint was trained with."
        )
    return converted


# ----------------------------------------------------------------------------------------------------- the whole
def check_writable(dump_path: Path, overwrite: bool):
    """New or empty; with --overwrite only a folder holding an earlier conversion (an NCSNppModel pipeline)."""
    check_dump_path(dump_path, overwrite)
    if overwrite and dump_path.is_dir() and any(dump_path.iterdir()):
        try:
            index = json.loads((dump_path / "model_index.json").read_text())
            unet = json.loads((dump_path / "unet" / "config.json").read_text())
        except (OSError, ValueError):
            index, unet = {}, {}
        if index.get("_class_name") != "NCSNPipeline" or unet.get("_class_name") != "NCSNppModel":
            raise ValueError(
                f"--dump_path {dump_path} holds files this converter did not write (no NCSNppModel pipeline there); "
                "pass a new or empty folder."
            )


def convert(checkpoint_path, config_path, dump_path, use_ema=True, overwrite=False) -> NCSNPipeline:
    dump_path = Path(dump_path)
    check_writable(dump_path, overwrite)
    config = load_config(config_path)
    kwargs = network_kwargs(config)
    network = NCSNppModel(**kwargs)
    state = load_checkpoint(checkpoint_path)
    weights = checkpoint_weights(state, use_ema, network.config.embedding_type == "fourier")
    network.load_state_dict(convert_state_dict(weights, network), strict=True)
    pipeline = NCSNPipeline(unet=network.eval(), scheduler=build_scheduler(config, network))
    card = PipelineCard(
        training={
            "source": f"converted from the authors' checkpoint (yang-song/score_sde_pytorch, "
            f"{Path(checkpoint_path).name}, step {state.get('step')})",
            "official config": Path(config_path).name,
            "dataset_name": config["data"].get("dataset"),
            "weights": "EMA" if use_ema else "raw",
        },
        license="apache-2.0",  # the license of the authors' repository
    )
    kept = write_pipeline(pipeline, dump_path, card)
    if kept:
        print(f"Kept {len(kept)} file(s) in {dump_path} that this conversion did not write: {kept[:5]}")
    return pipeline


def main(argv=None):
    args = parse_args(argv)
    try:
        convert(args.checkpoint_path, args.config, args.dump_path, use_ema=not args.no_ema, overwrite=args.overwrite)
    except ValueError as error:
        sys.exit(f"error: {error}")
    print(f"Saved an NCSNPipeline to {args.dump_path}")


if __name__ == "__main__":
    main()
