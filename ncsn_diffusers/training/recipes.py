"""The authors' training recipes for NCSN v1 (ermongroup/ncsn) and NCSNv2 (ermongroup/ncsnv2), as tables.

`train_ncsn.py --recipe ncsn_v1|ncsnv2 [--recipe_dataset NAME]` applies them; explicit flags still override. What
the recipes fix, as the authors' code does:

- Adam with a constant learning rate (1e-3 for v1, 1e-4 for NCSNv2), betas (0.9, 0.999), no weight decay, no
  warm-up, no gradient clipping, batch 128 (32 for FFHQ).
- Adam's epsilon rescaled to our loss: they minimise 1/2 ||sigma s + z||^2 summed over the D pixels and averaged
  over the batch, which is D/2 times our pixel mean (`dsm_loss`). Scaling a loss by c scales Adam's moments m and
  sqrt(v) by c, so the update m / (sqrt(v) + eps) is unchanged exactly when eps is divided by c: eps_ours =
  eps_theirs * 2 / D.
- NCSNv2: EMA of rate 0.999 from the first step (their EMAHelper: shadow <- 0.999 shadow + 0.001 theta, no warm-up),
  no dequantisation; v1: no EMA, uniform dequantisation (their anneal_runner.py).
- Data in [0, 1], the network's own 2 x - 1 (`rescale_input`), and the noise ladder, T, epsilon and final denoising
  of their config for the data set (or, for a data set they did not train on, NCSNv2's Techniques 1, 2 and 4
  computed from the data; v1's ladder is the same for every data set).
"""

from dataclasses import dataclass

from ..models import NCSNRefineNet, NCSNv2Model

RECIPES = ("ncsn_v1", "ncsnv2")
MODEL_TYPES = ("unet", "ncsn_v1", "ncsnv2", "ncsnpp")
# The data range of the authors' code: their networks map x in [0, 1] to 2 x - 1 themselves.
OFFICIAL_DATA_RANGE = (0.0, 1.0)


@dataclass(frozen=True)
class OfficialConfig:
    """One data set's settings in the authors' YAML config (and, for v1, the constants of anneal_runner.py)."""

    resolution: int
    channels: int
    sigma_begin: float  # sigma_1
    sigma_end: float  # sigma_L
    num_classes: int  # L
    n_steps_each: int  # T
    step_lr: float  # epsilon, in the official Langevin convention
    denoise: bool
    network: str  # NCSNRefineNet or an NCSNv2Model variant
    ngf: int
    batch_size: int
    n_iters: int
    adam_eps: float
    random_flip: bool


def _v1(resolution, channels, ngf, random_flip):
    return OfficialConfig(resolution, channels, 1.0, 0.01, 10, 100, 2e-5, False, "ncsn_v1", ngf, 128, 200_001, 1e-8,
                          random_flip)  # fmt: skip


def _v2(resolution, sigma_begin, num_classes, n_steps_each, step_lr, network, n_iters, batch_size=128, adam_eps=1e-8):
    return OfficialConfig(resolution, 3, sigma_begin, 0.01, num_classes, n_steps_each, step_lr, True, network, 128,
                          batch_size, n_iters, adam_eps, True)  # fmt: skip


# ermongroup/ncsn configs/anneal.yml (MNIST, CIFAR-10, CelebA) and ermongroup/ncsnv2 configs/*.yml.
OFFICIAL_CONFIGS = {
    "ncsn_v1": {
        "cifar10": _v1(32, 3, 128, True),
        "celeba": _v1(32, 3, 128, True),
        "mnist": _v1(28, 1, 64, False),
    },
    "ncsnv2": {
        "cifar10": _v2(32, 50.0, 232, 5, 6.2e-6, "ncsnv2", 300_001),
        "celeba": _v2(64, 90.0, 500, 5, 3.3e-6, "ncsnv2", 210_001),
        "church": _v2(64, 140.0, 788, 4, 4.9e-6, "ncsnv2_deeper", 200_001),
        "bedroom": _v2(128, 190.0, 1086, 3, 1.8e-6, "ncsnv2_deeper", 150_001),
        "tower": _v2(128, 190.0, 1086, 3, 1.8e-6, "ncsnv2_deeper", 150_001),
        "ffhq": _v2(256, 348.0, 2311, 3, 9e-7, "ncsnv2_deepest", 80_001, batch_size=32, adam_eps=1e-3),
    },
}


def adam_epsilon_for_pixel_mean_loss(official_eps: float, data_dim: int) -> float:
    """Adam's epsilon that makes updates on our pixel-mean loss equal the authors' on their D/2 times larger loss."""
    return official_eps * 2.0 / data_dim


def recipe_settings(recipe: str, dataset: str | None, data_dim: int) -> dict:
    """The flag values (`train_ncsn.py` dests) of an official recipe for `dataset`, or of its data-set-free part.

    Args:
        recipe (`str`): `"ncsn_v1"` or `"ncsnv2"`.
        dataset (`str`, *optional*): a data set of the authors' configs (see `OFFICIAL_CONFIGS`); `None` for another
            data set: v1 keeps its universal ladder, NCSNv2 computes its ladder from the data (Techniques 1, 2, 4).
        data_dim (`int`): D = channels x height x width of the training images, for Adam's epsilon.
    """
    if recipe not in RECIPES:
        raise ValueError(f"Unknown recipe {recipe!r}; choose one of {list(RECIPES)}.")
    tables = OFFICIAL_CONFIGS[recipe]
    if dataset is not None and dataset not in tables:
        raise ValueError(f"--recipe {recipe} has official settings for {sorted(tables)}, not {dataset!r}.")
    v2 = recipe == "ncsnv2"
    settings = {
        "objective": "dsm",
        "model_type": recipe,
        "learning_rate": 1e-4 if v2 else 1e-3,
        "lr_scheduler": "constant",
        "lr_warmup_steps": 0,
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "adam_weight_decay": 0.0,
        "max_grad_norm": 0.0,
        "use_ema": v2,
        "ema_max_decay": 0.999,
        "ema_warmup": False,
        "dequantize": not v2,
        "train_batch_size": 128,
        "final_denoise": v2,
        # the papers train on the levels of their ladder and sample with annealed Langevin dynamics
        "sigma_sampling": "discrete",
        "sampler": "annealed_langevin",
    }
    if dataset is None:
        default = OFFICIAL_CONFIGS[recipe]["cifar10"]
        settings["adam_epsilon"] = adam_epsilon_for_pixel_mean_loss(default.adam_eps, data_dim)
        if v2:
            settings.update(noise_ladder="ncsnv2", sigma_min=0.01, steps_per_level=5)
        else:
            settings.update(noise_ladder="explicit", **_ladder(default))
        return settings
    config = tables[dataset]
    settings.update(
        noise_ladder="explicit",
        **_ladder(config),
        resolution=config.resolution,
        channels=config.channels,
        random_flip=config.random_flip,
        train_batch_size=config.batch_size,
        max_train_steps=config.n_iters,
        base_channels=config.ngf,
        adam_epsilon=adam_epsilon_for_pixel_mean_loss(config.adam_eps, data_dim),
    )
    if v2:
        settings["ncsnv2_variant"] = config.network
    return settings


def _ladder(config: OfficialConfig) -> dict:
    return {
        "sigma_max": config.sigma_begin,
        "sigma_min": config.sigma_end,
        "num_noise_levels": config.num_classes,
        "steps_per_level": config.n_steps_each,
        "langevin_epsilon": config.step_lr,
        "final_denoise": config.denoise,
    }


def build_paper_network(
    model_type: str,
    sample_size: int,
    in_channels: int,
    base_channels: int,
    data_range: tuple[float, float],
    ladder: tuple[float, float, int],
    variant: str = "ncsnv2",
) -> NCSNRefineNet | NCSNv2Model:
    """The authors' network for `model_type` (`"ncsn_v1"` or `"ncsnv2"`), on data in `data_range`.

    The network applies the official 2 x - 1 itself when the data is in [0, 1]; for data already in [-1, 1] it does
    not. NCSN v1 is conditioned on the levels of `ladder` = (sigma_1, sigma_L, L), the scheduler's geometric ladder.
    """
    if tuple(data_range) not in ((0.0, 1.0), (-1.0, 1.0)):
        raise ValueError(f"The paper networks take data in [0, 1] or [-1, 1], not {tuple(data_range)}.")
    common = {"sample_size": sample_size, "in_channels": in_channels, "base_channels": base_channels}
    common["rescale_input"] = tuple(data_range) == (0.0, 1.0)
    if model_type == "ncsn_v1":
        sigma_max, sigma_min, num_noise_levels = ladder
        return NCSNRefineNet(**common, sigma_max=sigma_max, sigma_min=sigma_min, num_noise_levels=num_noise_levels)
    if model_type == "ncsnv2":
        return NCSNv2Model.from_variant(variant, **common)
    raise ValueError(f"model_type={model_type!r} is not a paper network; choose 'ncsn_v1' or 'ncsnv2'.")
