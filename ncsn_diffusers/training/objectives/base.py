"""`Objective`: what every training objective supplies to the run (as EDM's loss objects): the distribution of its
noise levels, its loss, the network it trains and how that is saved."""

import torch

from ..export import save_pipeline
from ..networks import build_ncsn_unet, build_ncsnpp_unet, build_paper_unet
from .perturbation import training_losses


class Objective:
    """A training objective: the distribution of its noise levels and its loss, called at every step, and the
    network it trains and how that is saved (`build_network`, `use_batch_order`, `save`: a score network saved as
    a pipeline, unless a subclass says otherwise), and the state of any other model it owns (`prepare`, `after_step`,
    `state_dict`, `load_state_dict`).

    Subclasses set `name` (the `--objective` value) and `logged_as` (the log key of the same loss in the other
    parameterisation, or of the second logged figure), declare what they train through the class attributes below,
    and are listed in `OBJECTIVES` (`objectives/__init__.py`); a new objective is one file and one entry there.

    Attributes:
        noise_space (`str`): the coordinates of the run's noise scheduler, "ve" (x + sigma z) or "vp" (DDPM's x_t).
        ve_ladder (`bool`): trains on the VE ladder of `--noise_ladder`, `--sigma_max`, `--sigma_min` (its flags,
            checks, log line and card rows apply).
        default_run_ladder (`bool`): the ladder and sigma draws default to the default run's (the ncsnv2 ladder,
            log-uniform sigma) rather than the paper's (an explicit ladder, discrete levels).
        takes_recipe (`bool`): `--recipe` (the authors' networks and settings) trains this objective.
        resume_must_match (`tuple[str, ...]`): the objective's own settings a resumed run must share with its
            checkpoint (they shape what the checkpoint's state means).
        takes_preconditioning (`bool`): trains the score U-Net under `--preconditioning` (its loss weight applies).
        hub_files (`list[str]`, *optional*): what `--push_to_hub` uploads of --output_dir; None: the saved pipeline's
            own files (`ncsn_diffusers.hub.upload_patterns`).
    """

    name: str
    logged_as: str
    noise_space = "ve"
    ve_ladder = False
    default_run_ladder = False
    takes_recipe = False
    resume_must_match: tuple[str, ...] = ()
    takes_preconditioning = False
    hub_files: list[str] | None = None

    # Settings: `TrainingConfig.resolve` calls these on the run's objective, and `refuse_settings` on every other.

    @classmethod
    def adopt_settings(cls, config, explicit: set[str]):
        """First of all: settings the objective takes from elsewhere (a saved run) for those not given."""

    @classmethod
    def resolve_settings(cls, config, explicit: set[str]):
        """After the recipe: the objective's own defaults and checks."""

    @classmethod
    def check_settings(cls, config, explicit: set[str]):
        """Last: refuses flags given explicitly that this objective's run would ignore."""

    @classmethod
    def refuse_settings(cls, config, explicit: set[str]):
        """On a run of another objective: refuses this objective's own flags given explicitly."""

    def __init__(self, config, noise_scheduler):
        self.config, self.noise_scheduler = config, noise_scheduler

    def sample_levels(self, batch_size: int, generator: torch.Generator, device) -> torch.Tensor:
        """(B,) noise levels of one global batch, drawn from `generator` (the batch's (seed, step) stream)."""
        raise NotImplementedError

    def losses(self, unet, clean, noise, levels, micro_step: int, process_index: int = 0):
        """(loss to optimise, the same loss in the other parameterisation), both scalars."""
        return training_losses(unet, self.noise_scheduler, clean, noise, levels, self.ladder(clean.device))

    # Hooks: the network the run trains and how it is saved, and the state of an objective that owns models besides
    # it (a teacher, a target network). The defaults train and save a score (or epsilon) network.

    def build_network(self, args, images) -> torch.nn.Module:
        """The network to train, on the training set `images`: the score U-Net of `args`."""
        if args.model_type == "ncsnpp":
            return build_ncsnpp_unet(args)
        return build_ncsn_unet(args) if args.model_type == "unet" else build_paper_unet(args, self.noise_scheduler)

    def use_batch_order(self, order, num_processes: int):
        """Called once with the run's `BatchOrder` before training; an objective reading per-image data keeps it."""

    def prepare(self, accelerator, network):
        """Called once the trained network is prepared, before a checkpoint is resumed."""

    def after_step(self, network):
        """Called after each optimizer step with the unwrapped trained network."""

    def state_dict(self) -> dict:
        """The objective's own state (tensors and JSON values), saved in every checkpoint."""
        return {}

    def load_state_dict(self, state: dict):
        """Restores what `state_dict` returned."""

    def save(self, args, accelerator, model, images, max_train_steps: int, train_time: float, last: dict, repo_id):
        """Writes the trained `model` (unwrapped, its EMA weights loaded) to --output_dir with its model card, which
        names `repo_id`: here the pipeline with its sampler and sample grid. `finish.finish` calls it, then pushes."""
        save_pipeline(
            args, accelerator, model, self.noise_scheduler, images, max_train_steps, train_time, last, repo_id,
            self.ve_ladder,
        )  # fmt: skip

    def ladder(self, device) -> torch.Tensor:
        """The scheduler's `sigmas` (VE) or `alphas_cumprod` (VP) on `device`, computed once."""
        if getattr(self, "_ladder", None) is None or self._ladder.device != torch.device(device):
            scheduler = self.noise_scheduler
            self._ladder = (scheduler.sigmas if self.noise_space == "ve" else scheduler.alphas_cumprod).to(device)
        return self._ladder
