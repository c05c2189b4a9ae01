"""scripts/convert_score_sde_to_diffusers.py against the score functions of the authors' own networks
(tests/fixtures/score_sde_checkpoints, made by its make_fixtures.py with yang-song/score_sde_pytorch)."""

import io
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from pickle_payload import Payload
from safetensors.torch import load_file

from ncsn_diffusers import NCSNPipeline, NCSNppModel, StochasticHeunScheduler

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "score_sde_checkpoints"
SCRIPT = ROOT / "scripts" / "convert_score_sde_to_diffusers.py"
sys.path.insert(0, str(SCRIPT.parent))

import convert_score_sde_to_diffusers as convert_script  # noqa: E402

FAMILIES = sorted(p.name for p in FIXTURES.iterdir() if (p / "checkpoint_1.pth").is_file())
BETA_MIN, BETA_MAX, SIGMA_MIN, SIGMA_MAX, N = 0.1, 20.0, 0.01, 50.0, 1000  # the fixtures' defaults


def _config(family: str) -> Path:
    sde, name = family.split("_", 1)
    return FIXTURES / "configs" / sde / f"{name}.py"


def _convert(family: str, dump_path: Path, *extra: str) -> NCSNPipeline:
    args = ["--checkpoint_path", str(FIXTURES / family / "checkpoint_1.pth"), "--config", str(_config(family))]
    convert_script.main([*args, "--dump_path", str(dump_path), *extra])
    return NCSNPipeline.from_pretrained(dump_path)


def _alpha_and_sigma(family: str, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x_VE = x_t / alpha and sigma = std / alpha of the fixture's SDE at t, from the paper's formulas (float64)."""
    t = t.double()
    if family.startswith("ve_"):
        if "discrete" in family:  # SMLD: their score function rounds t to the rung k = round((1 - t)(N - 1))
            k = torch.round((1 - t) * (N - 1))
            return torch.ones_like(t), SIGMA_MAX * (SIGMA_MIN / SIGMA_MAX) ** (k / (N - 1))
        return torch.ones_like(t), SIGMA_MIN * (SIGMA_MAX / SIGMA_MIN) ** t
    if "discrete" in family:  # DDPM: alphabar_k = prod (1 - beta_j), beta = linspace(beta_min / N, beta_max / N, N)
        k = (t * (N - 1)).round().long()
        alphas_cumprod = torch.cumprod(1 - torch.linspace(BETA_MIN / N, BETA_MAX / N, N, dtype=torch.float64), 0)
        alpha = alphas_cumprod[k].sqrt()
        return alpha, (1 - alphas_cumprod[k]).sqrt() / alpha
    alpha = torch.exp(-0.25 * t**2 * (BETA_MAX - BETA_MIN) - 0.5 * t * BETA_MIN)
    std = (1 - alpha**2).sqrt() if family.startswith("vp_") else 1 - alpha**2  # sub-VP: std = 1 - alpha**2
    return alpha, std / alpha


def _their_score_from_ours(pipe: NCSNPipeline, family: str, fixture: dict) -> torch.Tensor:
    """Calls the converted network as the pipelines do, unet(x_VE, sigma), and maps the VE score back to x_t:
    s(x_t, t) = s_VE(x_t / alpha, sigma) / alpha."""
    alpha, sigma = _alpha_and_sigma(family, fixture["t"])
    alpha = alpha.reshape(-1, 1, 1, 1)
    with torch.no_grad():
        score_ve = pipe.unet((fixture["inputs"] / alpha).float(), sigma).sample
    assert score_ve.dtype == torch.float32
    return score_ve.double() / alpha


@pytest.mark.parametrize("family", FAMILIES)
def test_converted_checkpoint_reproduces_the_authors_score(family, tmp_path):
    """Bug caught: any layer, rename, EMA order, time map (sigma <-> t, x_VE = x / alpha), float32 rounding of the
    time condition or output scaling that differs from the authors' `get_score_fn` for that family."""
    pipe = _convert(family, tmp_path / family)
    assert type(pipe.unet) is NCSNppModel
    fixture = load_file(FIXTURES / family / "outputs.safetensors")
    reference = fixture["score"].double()
    ours = _their_score_from_ours(pipe, family, fixture)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5 * reference.abs().max().item())


def test_all_families_are_covered():
    assert set(FAMILIES) >= {
        "ve_ncsnpp_continuous",
        "ve_ncsnpp_discrete",
        "ve_ncsnpp_deep_continuous",
        "ve_ncsnpp_skip_continuous",
        "vp_ddpmpp_continuous",
        "subvp_ddpmpp_continuous",
        "vp_ncsnpp_discrete",
    }


def test_ema_weights_are_taken_and_no_ema_keeps_the_raw_ones(tmp_path):
    """Bug caught: the raw `model` weights converted where the authors sample with `ema.shadow_params`."""
    family = "ve_ncsnpp_continuous"
    fixture = load_file(FIXTURES / family / "outputs.safetensors")
    raw = _their_score_from_ours(_convert(family, tmp_path / "raw", "--no_ema"), family, fixture)
    torch.testing.assert_close(raw, fixture["score_raw"].double(), rtol=1e-5, atol=1e-4)
    assert not torch.allclose(raw, fixture["score"].double(), rtol=1e-3, atol=1e-3)
    card = (tmp_path / "raw" / "README.md").read_text()
    assert "score_sde_pytorch" in card and "checkpoint_1.pth" in card


def test_scheduler_matches_the_sde_and_the_data_range(tmp_path):
    """Bug caught: a VP model sampled on the VE config's sigma range, or data in [0, 1] where the config is centered."""
    ve = _convert("ve_ncsnpp_continuous", tmp_path / "ve").scheduler.config
    assert (ve.sigma_min, ve.sigma_max, ve.num_noise_levels) == (SIGMA_MIN, SIGMA_MAX, N)
    assert (ve.corrector_steps, ve.snr, ve.final_denoise, tuple(ve.data_range)) == (1, 0.16, True, (0.0, 1.0))
    for family, std in (("vp_ddpmpp_continuous", math.sqrt), ("subvp_ddpmpp_continuous", lambda v: v)):
        config = _convert(family, tmp_path / family).scheduler.config
        for t, sigma in ((1.0, config.sigma_max), (1e-3, config.sigma_min)):  # their sampler's t in [1e-3, 1]
            alpha = math.exp(-0.25 * t**2 * (BETA_MAX - BETA_MIN) - 0.5 * t * BETA_MIN)
            assert sigma == pytest.approx(std(1 - alpha**2) / alpha, rel=1e-9)
        assert (config.corrector_steps, tuple(config.data_range)) == (0, (-1.0, 1.0))  # corrector 'none', centered


def test_converted_pipelines_sample_with_the_package_samplers(tmp_path):
    for family in ("ve_ncsnpp_discrete", "subvp_ddpmpp_continuous"):
        pipe = _convert(family, tmp_path / family)
        pipe.set_progress_bar_config(disable=True)
        generator = torch.Generator().manual_seed(0)
        images = pipe(batch_size=2, num_inference_steps=6, output_type="pt", generator=generator).images
        assert images.shape == (2, 3, 8, 8) and torch.isfinite(images).all()
        pipe.scheduler = StochasticHeunScheduler(sigma_min=pipe.scheduler.config.sigma_min,
                                                 sigma_max=pipe.scheduler.config.sigma_max,
                                                 data_range=pipe.scheduler.config.data_range)  # fmt: skip
        images = pipe(batch_size=1, num_inference_steps=4, output_type="pt", generator=generator).images
        assert torch.isfinite(images).all()


def _rewrite_pickle(source: Path, target: Path, old: bytes, new: bytes):
    """Copies a torch zip checkpoint, replacing `old` by `new` in its pickle (GLOBAL names are newline-terminated)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/data.pkl"):
                assert old in data
                data = data.replace(old, new)
            zout.writestr(info.filename, data)
    target.write_bytes(buffer.getvalue())


def test_numpy_1_and_2_pickles_load_with_weights_only(tmp_path):
    """Bug caught: torch.load(weights_only=True) refusing the numpy float64 learning rate of their optimizer, as
    pickled by numpy 2 (numpy._core.multiarray.scalar, the fixtures) or numpy 1.x (numpy.core.multiarray.scalar)."""
    source = FIXTURES / "vp_ddpmpp_continuous" / "checkpoint_1.pth"
    with pytest.raises(Exception, match="numpy"):
        torch.load(source, weights_only=True)  # the trap: no allow-list, no load
    numpy1 = tmp_path / "numpy1.pth"
    _rewrite_pickle(source, numpy1, b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")
    for path in (source, numpy1):
        state = convert_script.load_checkpoint(path)
        assert float(state["optimizer"]["param_groups"][0]["lr"]) == pytest.approx(2e-4 / 5000)
        assert len(state["ema"]["shadow_params"]) > 0


def test_code_in_a_checkpoint_or_a_config_never_runs(tmp_path):
    """Bug caught: a checkpoint unpickled with weights_only=False, or a config .py imported or executed."""
    marker = tmp_path / "ran"
    state = torch.load(FIXTURES / "ve_ncsnpp_continuous" / "checkpoint_1.pth", weights_only=False)
    state["step"] = Payload(marker)
    torch.save(state, tmp_path / "payload.pth")
    with pytest.raises(ValueError, match="weights_only=True.*never retries with weights_only=False"):
        convert_script.convert(tmp_path / "payload.pth", _config("ve_ncsnpp_continuous"), tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()

    config = tmp_path / "configs" / "ve" / "with_code.py"
    config.parent.mkdir(parents=True)
    (tmp_path / "configs" / "default_tiny_configs.py").write_text(
        (FIXTURES / "configs" / "default_tiny_configs.py").read_text()
    )
    text = _config("ve_ncsnpp_continuous").read_text()
    text = f"open({str(marker)!r}, 'w')\n" + text.replace(
        "    return config", f"    x = open({str(marker)!r}, 'w')\n    return config"
    )
    config.write_text(text)
    pipe = convert_script.convert(FIXTURES / "ve_ncsnpp_continuous" / "checkpoint_1.pth", config, tmp_path / "out")
    assert not marker.exists() and pipe.unet.config.base_channels == 4


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_never_overwrites_a_folder_it_did_not_write(tmp_path):
    """Bug caught: a user's folder (or another pipeline) replaced or mixed with the converted model, --overwrite
    included."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model_index.json").write_text('{"_class_name": "NCSNPipeline"}')
    (mine / "README.md").write_text("my notes")
    before = _tree(mine)
    for extra in ((), ("--overwrite",)):
        with pytest.raises(SystemExit, match="--dump_path .*mine"):
            _convert("ve_ncsnpp_continuous", mine, *extra)
        assert _tree(mine) == before
    _convert("ve_ncsnpp_continuous", tmp_path / "out")
    with pytest.raises(SystemExit, match="not empty"):
        _convert("ve_ncsnpp_discrete", tmp_path / "out")
    pipe = _convert("ve_ncsnpp_discrete", tmp_path / "out", "--overwrite")  # an earlier conversion: replaced
    assert pipe.unet.config.continuous is False


def test_wrong_config_or_checkpoint_fails_clearly(tmp_path):
    checkpoint = FIXTURES / "ve_ncsnpp_continuous" / "checkpoint_1.pth"
    deep = _config("ve_ncsnpp_deep_continuous")
    for use_ema in (True, False):  # NCSN++ with 1 res block per level, config with 2
        with pytest.raises(ValueError, match=r"does not match the network of --config: unknown keys .* missing"):
            convert_script.convert(checkpoint, deep, tmp_path / "a", use_ema=use_ema)
    with pytest.raises(ValueError, match="ema.shadow_params .* do not line up"):  # Fourier W taken as trainable
        convert_script.convert(checkpoint, _config("ve_ncsnpp_discrete"), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match="`sigmas` are not the ladder"):  # VE discrete ckpt, config with another N
        text = _config("ve_ncsnpp_discrete").read_text().replace("    # model\n", "    config.model.num_scales = 10\n")
        other = FIXTURES / "configs" / "ve" / "ncsnpp_discrete.py"
        edited = tmp_path / "configs" / "ve" / "n10.py"
        edited.parent.mkdir(parents=True)
        (tmp_path / "configs" / "default_tiny_configs.py").write_bytes(
            (FIXTURES / "configs" / "default_tiny_configs.py").read_bytes()
        )
        edited.write_text(text)
        assert other.is_file()
        convert_script.convert(FIXTURES / "ve_ncsnpp_discrete" / "checkpoint_1.pth", edited, tmp_path / "c")
    for body, match in (
        ("def get_config():\n    for i in range(3):\n        pass\n", "is not an assignment"),
        ("def something():\n    pass\n", "defines no get_config"),
        ("def get_config(:\n", "could not be read as a Python file"),
    ):
        (tmp_path / "bad.py").write_text(body)
        with pytest.raises(ValueError, match=match):
            convert_script.load_config(tmp_path / "bad.py")
    (tmp_path / "ddpm.py").write_text(
        "import ml_collections\n\ndef get_config():\n    config = ml_collections.ConfigDict()\n"
        "    config.training = ml_collections.ConfigDict()\n    config.training.sde = 'vpsde'\n"
        "    config.data = ml_collections.ConfigDict()\n    config.model = model = ml_collections.ConfigDict()\n"
        "    model.name = 'ddpm'\n    return config\n"
    )
    with pytest.raises(ValueError, match="'name': 'ddpm'.*not their DDPM"):
        convert_script.load_config(tmp_path / "ddpm.py")
    (tmp_path / "orphan.py").write_text(
        "from configs.default_missing_configs import get_default_configs\n\n"
        "def get_config():\n    config = get_default_configs()\n    return config\n"
    )
    with pytest.raises(ValueError, match="default_missing_configs"):
        convert_script.load_config(tmp_path / "orphan.py")


@pytest.mark.slow
def test_command_line_end_to_end(tmp_path):
    """The one run of the script as a command: it imports the helpers of the NCSN converter beside it."""
    family = "vp_ncsnpp_discrete"
    command = [sys.executable, str(SCRIPT), "--checkpoint_path", str(FIXTURES / family / "checkpoint_1.pth")]
    command += ["--config", str(_config(family)), "--dump_path", str(tmp_path / "out")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Saved an NCSNPipeline" in result.stdout
    fixture = load_file(FIXTURES / family / "outputs.safetensors")
    ours = _their_score_from_ours(NCSNPipeline.from_pretrained(tmp_path / "out"), family, fixture)
    torch.testing.assert_close(ours, fixture["score"].double(), rtol=1e-5, atol=1e-5 * fixture["score"].abs().max())


if __name__ == "__main__":  # python tests/test_convert_score_sde.py: the measured error of each family
    import tempfile

    torch.set_num_threads(1)
    print(f"{'family':28s} max|ours - theirs| / max|theirs|")
    for family in FAMILIES:
        with tempfile.TemporaryDirectory() as tmp:
            pipe = _convert(family, Path(tmp) / "out")
            fixture = load_file(FIXTURES / family / "outputs.safetensors")
            reference = fixture["score"].double()
            error = (_their_score_from_ours(pipe, family, fixture) - reference).abs().max() / reference.abs().max()
        print(f"{family:28s} {error.item():.1e}")
