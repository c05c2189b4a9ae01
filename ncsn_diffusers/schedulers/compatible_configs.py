"""How a score scheduler of the package reads another scheduler's config (diffusers' `from_config`), so that swapping
samplers keeps what describes the model and the chain.

diffusers marks the arguments a scheduler was built without (`_use_default_values`) and drops them when another class
reads its config, so that the other class's defaults apply. For a score scheduler every value describes the model or
the chain (its noise range, parameterization, data range, step size), and a value left at its default is as much the
user's as one set by hand. So the package's schedulers mark none as a default and carry `_class_name` from
construction: a scheduler converts the same saved or not, and a round trip through any compatible class gives back
every value (those the other class does not take travel in its config, as diffusers' hidden keys do).

Reading another scheduler's config, a score scheduler
- keeps that scheduler's values, its defaults included: they describe the model (DDPM's betas and epsilon);
- takes what it knows under another name where it has no value of its own (`renamed_settings`);
- fills what the source never had with values for a ladder of another family (the class's `read_foreign_config`);
- takes an `epsilon` only from its owner. Annealed Langevin's step (alpha_i = epsilon sigma_i**2 / sigma_L**2) and
  consistent annealed sampling's (inside a window that the ladder's ratio fixes) share the name but not the meaning:
  a config records whose step its `epsilon` is (`_epsilon_of`, carried through the classes in between), and a class
  that meets the other's step keeps it aside (`_kept_epsilons`) for that class to take back.
"""

import inspect

# The classes whose `epsilon` is a step size of their own.
EPSILON_OWNERS = ("AnnealedLangevinScheduler", "ConsistentAnnealedSamplingScheduler")
# diffusers' ScoreSdeVeScheduler (the Hub's google/ncsnpp-* folders): its data lie in [0, 1], its U-Net returns the
# score, its corrector's step takes the batch's mean norms; its `correct_steps` Langevin steps per level and
# `num_train_timesteps` levels are the predictor-corrector chain's.
SCORE_SDE_VE = "ScoreSdeVeScheduler"
SCORE_SDE_VE_SETTINGS = {"data_range": (0.0, 1.0), "prediction_type": "score", "corrector_norms": "batch_mean"}
RENAMED_SETTINGS = {"correct_steps": "corrector_steps", "num_train_timesteps": "num_noise_levels"}


def init_keys(cls) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def is_own_config(cls, config: dict) -> bool:
    """Whether `config` is one of `cls`'s: by its `_class_name`, or, for a hand-written dict without one, by holding
    only `cls`'s arguments."""
    source = config.get("_class_name")
    if source is not None:
        return source == cls.__name__
    return {k for k in config if not k.startswith("_")} <= init_keys(cls)


def is_score_sde_ve_config(config: dict) -> bool:
    if config.get("_class_name") is not None:
        return config["_class_name"] == SCORE_SDE_VE
    return {"snr", "sampling_eps", "correct_steps"} <= set(config)


def epsilon_owner(config: dict) -> str | None:
    """The class whose step the config's `epsilon` is: the class that made the config if it has a step, else the last
    one that did; `None` where nothing says (a folder saved by an earlier release)."""
    source = config.get("_class_name")
    return source if source in EPSILON_OWNERS else config.get("_epsilon_of")


class ScoreConfigMixin:
    """The `from_config` behaviour of the package's score schedulers (see the module's docstring)."""

    def register_to_config(self, **kwargs):
        if not hasattr(self, "_internal_dict"):  # the constructor's call: every argument, defaults included
            kwargs["_use_default_values"] = []
            kwargs["_class_name"] = type(self).__name__
            if type(self).__name__ in EPSILON_OWNERS:
                kwargs["_epsilon_of"] = type(self).__name__
        super().register_to_config(**kwargs)

    @classmethod
    def read_foreign_config(cls, config: dict) -> dict:
        """Fills, in place, the settings that another scheduler's `config` does not have; the class's own choice."""
        return config

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        config = dict(config_dict)
        if not is_own_config(cls, config):
            config.pop("_use_default_values", None)  # the source's values describe the model, its defaults too
            keys = init_keys(cls)
            if is_score_sde_ve_config(config):
                for name, value in SCORE_SDE_VE_SETTINGS.items():
                    if name in keys:
                        config.setdefault(name, value)
            for theirs, ours in RENAMED_SETTINGS.items():
                if ours in keys and theirs not in keys and theirs in config:
                    config.setdefault(ours, config[theirs])
            if cls.__name__ in EPSILON_OWNERS:
                cls._take_own_epsilon(config)
            config = cls.read_foreign_config(config)
        init_dict, unused_kwargs, hidden = super().extract_init_dict(config, **kwargs)
        if cls.__name__ in EPSILON_OWNERS:
            hidden.pop("_epsilon_of", None)  # this class's own, stamped at construction
        return init_dict, unused_kwargs, hidden

    @classmethod
    def _take_own_epsilon(cls, config: dict):
        """Keeps aside an `epsilon` of the other class, and takes back one of this class's kept aside earlier."""
        kept = dict(config.get("_kept_epsilons") or {})
        owner = epsilon_owner(config)
        if owner != cls.__name__:
            epsilon = config.pop("epsilon", None)
            if owner is not None:
                kept[owner] = epsilon
            if cls.__name__ in kept:
                config["epsilon"] = kept[cls.__name__]
        kept.pop(cls.__name__, None)
        config.pop("_kept_epsilons", None)
        if kept:
            config["_kept_epsilons"] = kept
