"""The contract every score scheduler of the package runs (diffusers' `SchedulerCommonTest` in spirit): save/load,
determinism with a generator, `return_dict`, the per-call checks and partial chains. Each
`test_scheduler_<name>.py` subclasses `ScoreSchedulerContract` with its class and a small config.

The model is exact: the score of N(mu, (s0**2 + sigma**2) I), the data N(mu, s0**2 I) perturbed at sigma.
"""

import inspect

import pytest
import torch
from diffusers.utils import DummyObject

MU, S0 = 0.3, 0.2


def gaussian_score(x: torch.Tensor, sigma) -> torch.Tensor:
    return -(x - MU) / (S0**2 + float(sigma) ** 2)


def public(config) -> dict:
    """A config without diffusers' bookkeeping keys (`_class_name`, `_use_default_values`, ...), lists as tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if not k.startswith("_")}


def kept_config(original, new) -> dict:
    """`new`'s config on the keys of `original`'s, as diffusers' `test_compatibles` compares a round trip: the other
    class's own settings may travel along (diffusers' hidden keys), but no value of `original` may change."""
    return {k: new.config.get(k, "<missing>") for k in original.config}


def run_chain(scheduler, x, generator, timesteps):
    for t in timesteps:
        x = scheduler.step(gaussian_score(x, t), t, x, generator=generator).prev_sample
    return x


class ScoreSchedulerContract:
    scheduler_class = None
    config: dict = {}
    num_inference_steps = 9
    # an index the partial chain may begin at (StochasticHeun: an Euler call)
    begin_index = 4
    # a config whose calls per level do not divide most N, and the fewest calls it lays out
    uneven_config: dict = {}
    min_calls = 1

    def scheduler(self, **overrides):
        return self.scheduler_class(**{**self.config, **overrides})

    def full_chain(self, scheduler, seed=0):
        scheduler.set_timesteps(self.num_inference_steps)
        generator = torch.Generator().manual_seed(seed)
        x = scheduler.initial_sample((2, 1, 3, 3), generator=generator)
        return run_chain(scheduler, x, generator, scheduler.timesteps)

    def test_save_load_gives_identical_chains(self, tmp_path):
        scheduler = self.scheduler()
        scheduler.save_config(tmp_path)
        loaded = self.scheduler_class.from_pretrained(tmp_path)
        assert public(loaded.config) == public(scheduler.config)
        assert torch.equal(self.full_chain(loaded), self.full_chain(scheduler))

    def test_generator_makes_the_chain_deterministic(self):
        a, b, c = (self.full_chain(self.scheduler(), seed) for seed in (0, 0, 1))
        assert torch.equal(a, b) and not torch.equal(a, c) and torch.isfinite(a).all()

    def test_return_dict_false_equals_the_dataclass(self):
        scheduler = self.scheduler()
        scheduler.set_timesteps(self.num_inference_steps)
        x = torch.full((2, 3), 0.7)
        t = scheduler.timesteps[0]
        out = scheduler.step(gaussian_score(x, t), t, x, generator=torch.Generator().manual_seed(0))
        scheduler.set_timesteps(self.num_inference_steps)
        tup = scheduler.step(gaussian_score(x, t), t, x, generator=torch.Generator().manual_seed(0), return_dict=False)
        assert torch.equal(tup[0], out.prev_sample) and torch.equal(tup[1], out.pred_original_sample)

    def test_partial_chain_is_the_tail_of_the_full_chain(self):
        """Catches a begin index that is ignored (the tail restarts at step 0's level and step size) or off by one."""
        k = self.begin_index
        full = self.scheduler()
        full.set_timesteps(self.num_inference_steps)
        generator = torch.Generator().manual_seed(0)
        x = full.initial_sample((2, 1, 3, 3), generator=generator)
        x_k = run_chain(full, x, generator, full.timesteps[:k])
        state_k = generator.get_state()
        expected = run_chain(full, x_k, generator, full.timesteps[k:])

        tail = self.scheduler()
        tail.set_timesteps(self.num_inference_steps)
        tail.set_begin_index(k)
        assert tail.begin_index == k
        generator.set_state(state_k)
        assert torch.equal(run_chain(tail, x_k, generator, tail.timesteps[k:]), expected)

    def test_begin_index_misuse_names_the_fix(self):
        scheduler = self.scheduler()
        with pytest.raises(ValueError, match="before set_timesteps"):
            scheduler.set_begin_index(1)
        scheduler.set_timesteps(self.num_inference_steps)
        n = len(scheduler.timesteps)
        for bad in (-1, n, 1.0, True):
            with pytest.raises(ValueError, match=rf"begin_index={bad!r} must be an integer in \[0, {n - 1}\]"):
                scheduler.set_begin_index(bad)
        x = torch.zeros(1, 2)
        with pytest.raises(ValueError, match=r"set_begin_index\(k\)"):  # a tail without set_begin_index
            scheduler.step(x, scheduler.timesteps[self.begin_index], x)
        scheduler.step(x, scheduler.timesteps[0], x, generator=torch.Generator().manual_seed(0))
        with pytest.raises(ValueError, match="after 1 steps of this chain; call set_timesteps again"):
            scheduler.set_begin_index(self.begin_index)

    def test_index_for_timestep_finds_the_first_call_at_a_timestep(self):
        scheduler = self.scheduler()
        scheduler.set_timesteps(self.num_inference_steps)
        timesteps = scheduler.timesteps.tolist()
        for i, t in enumerate(timesteps):
            assert scheduler.index_for_timestep(t) == timesteps.index(t) <= i
        with pytest.raises(ValueError, match="is not in the schedule"):
            scheduler.index_for_timestep(12345.0)

    @pytest.mark.parametrize("num_inference_steps", [1, 2, 5, 7, 12])
    def test_set_timesteps_lays_out_exactly_n_calls(self, num_inference_steps):
        """Bug caught: PC with k >= 2 laid out more calls than asked (N=5, k=3 gave 6)."""
        scheduler = self.scheduler(**self.uneven_config)
        if num_inference_steps < self.min_calls:
            return
        scheduler.set_timesteps(num_inference_steps)
        assert len(scheduler.timesteps) == self.calls_laid_out(num_inference_steps)

    def calls_laid_out(self, num_inference_steps: int) -> int:
        return num_inference_steps

    def test_configured_chain_has_len_calls(self):
        scheduler = self.scheduler()
        scheduler.set_timesteps()
        assert len(scheduler.timesteps) == len(scheduler)

    def test_final_denoise_ends_with_the_denoised_estimate_at_no_extra_call(self):
        """One meaning, one cost: with `final_denoise` the last of the N calls returns x + sigma**2 s(x, sigma) at its
        own input (its `pred_original_sample`); without, a noisy update; N calls either way."""
        flags = (True, False) if "final_denoise" in self.scheduler().config else (None,)
        for flag in flags:
            scheduler = self.scheduler()
            settings = {} if flag is None else {"final_denoise": flag}
            scheduler.set_timesteps(self.num_inference_steps, **settings)
            assert len(scheduler.timesteps) == self.num_inference_steps
            generator = torch.Generator().manual_seed(0)
            x = scheduler.initial_sample((2, 1, 3, 3), generator=generator)
            x = run_chain(scheduler, x, generator, scheduler.timesteps[:-1])
            t = scheduler.timesteps[-1]
            out = scheduler.step(gaussian_score(x, t), t, x, generator=generator)
            denoised = x + float(t) ** 2 * gaussian_score(x, t)
            torch.testing.assert_close(out.pred_original_sample, denoised)
            if flag is False:
                assert not torch.allclose(out.prev_sample, denoised)
            else:
                torch.testing.assert_close(out.prev_sample, denoised)

    def test_a_chain_too_long_to_lay_out_is_refused_with_a_message(self):
        """Bug caught: set_timesteps(10**9) was killed for memory with no message."""
        with pytest.raises(ValueError, match="num_inference_steps=1000000000 is more than 1,000,000"):
            self.scheduler().set_timesteps(10**9)
        with pytest.raises(ValueError, match="num_noise_levels=1000000000 is more than 1,000,000"):
            self.scheduler(num_noise_levels=10**9)

    def test_compatibles_lists_the_package_schedulers_and_each_loads_this_config(self):
        """Bug caught: no `compatibles`, and a swap that failed or kept a foreign step size. Each of the package's
        schedulers builds from this scheduler's config (never saved) and samples."""
        from ncsn_diffusers.schedulers import SCORE_SCHEDULERS

        scheduler = self.scheduler()
        assert set(SCORE_SCHEDULERS) <= set(scheduler.compatibles)
        for cls in SCORE_SCHEDULERS:  # (diffusers' own compatibles may need extras, torchsde)
            other = cls.from_config(scheduler.config)
            assert other.config.sigma_max == scheduler.config.sigma_max
            assert torch.isfinite(self.full_chain(other)).all()

    def test_a_round_trip_through_every_compatible_keeps_the_config(self, tmp_path):
        """diffusers' `test_compatibles` round trip, `cls.from_config(other.from_config(scheduler.config).config)`,
        through every class of `compatibles` (not only the last in set order, which depends on the hash seed), from a
        configured and a default scheduler, unsaved and saved. Bug caught: a default annealed Langevin scheduler came
        back from PC with 1000 levels of 10 steps, from DDIM with final_denoise=True, from EDM predicting epsilon."""
        init_keys = set(inspect.signature(self.scheduler_class.__init__).parameters)
        self.scheduler().save_config(tmp_path)
        sources = (self.scheduler(), self.scheduler_class(), self.scheduler_class.from_pretrained(tmp_path))
        for scheduler in sources:
            for other in scheduler.compatibles:
                if isinstance(other, DummyObject):  # a class whose extra (torchsde) is not installed
                    continue
                back = self.scheduler_class.from_config(other.from_config(scheduler.config).config)
                assert kept_config(scheduler, back) == dict(scheduler.config), other.__name__
                assert not (set(back.config) - set(scheduler.config)) & init_keys, other.__name__

    def test_an_integer_sample_comes_back_float(self):
        """Bug caught: an int64 sample came back int64 from `step`, its update truncated."""
        scheduler = self.scheduler()
        scheduler.set_timesteps(self.num_inference_steps)
        x = torch.ones(1, 4, dtype=torch.int64)
        t = scheduler.timesteps[0]
        out = scheduler.step(gaussian_score(x, t), t, x, generator=torch.Generator().manual_seed(0))
        assert out.prev_sample.dtype == torch.float32 and out.pred_original_sample.dtype == torch.float32
