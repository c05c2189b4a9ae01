"""train_ncsn.py: the objectives' equivalence, end-to-end `accelerate launch` runs (one and two processes, both
objectives), kill-and-resume, the NaN stop, and clear errors for bad input.

Subprocesses are few (each `accelerate launch` pays seconds of imports); everything else calls the script in-process.
"""

import copy
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import train_ncsn
from ncsn_diffusers.digits import load_digits_images
from ncsn_diffusers.losses import dsm_loss
from ncsn_diffusers.parameterization import append_dims, epsilon_from_score, score_from_epsilon
from ncsn_diffusers.training import TrainingConfig, data, networks, objectives, run_dir, sampler
from ncsn_diffusers.training import config as training_config
from ncsn_diffusers.training.batch_order import BatchOrder
from ncsn_diffusers.training.checkpointing import complete_checkpoints, latest_checkpoint

REPO = Path(__file__).resolve().parents[2]

# A few seconds per run: the smallest U-Net on 8x8 digits, 1 Langevin step per level for the final grid.
TINY = [
    "--model_preset", "tiny", "--resolution", "8", "--train_batch_size", "8", "--num_sample_images", "4",
    "--steps_per_level", "1", "--num_noise_levels", "4", "--report_to", "none", "--logging_steps", "2",
]  # fmt: skip
# The same settings as TrainingConfig fields, for the unit tests that build a config without the command line.
TINY_CONFIG = dict(model_preset="tiny", resolution=8, train_batch_size=8, num_sample_images=4, steps_per_level=1)
TINY_CONFIG.update(num_noise_levels=4, report_to="none", logging_steps=2)


def run_main(*argv):
    """Runs train_ncsn.main in this process, with accelerate's process-wide state reset as a fresh process has it."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    train_ncsn.main([str(a) for a in argv])


def subprocess_env():
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.pop("ACCELERATE_USE_CPU", None)
    return env


def launch(*argv, num_processes=1, timeout=300, env=None):
    """`accelerate launch train_ncsn.py ...`; two processes run data-parallel over gloo on the CPU.

    The launcher and its workers run in their own session: past `timeout` seconds all of them are killed and the test
    fails naming the hang (a worker stuck at exit would otherwise outlive the launcher and the test run).
    """
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--num_processes", str(num_processes)]  # fmt: skip
    env = {**subprocess_env(), **(env or {})}
    if num_processes > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command += ["--multi_gpu", "--main_process_port", str(port)]
        env["ACCELERATE_USE_CPU"] = "1"  # `--cpu --num_processes 2` would silently run one process
    command += [str(REPO / "train_ncsn.py"), *map(str, argv)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                               start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{num_processes}-process run still running after {timeout} s (hung at exit?):\n{stderr[-3000:]}")
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def unet_weights(folder):
    return load_file(Path(folder) / "unet" / "diffusion_pytorch_model.safetensors")


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def log_records(output_dir):
    return [json.loads(line) for line in (Path(output_dir) / "logs" / "train_log.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------------------------------
# The two objectives are one: same numbers, same gradients, same weights
# ---------------------------------------------------------------------------------------------------------------------


def tiny_args(objective):
    return TrainingConfig(objective=objective, **TINY_CONFIG).resolve()


def train_pair(net_a, net_b, loss_a_fn, loss_b_fn, steps=4, max_grad_norm=1.0, scale_b=1.0, adam_eps=1e-8):
    """Trains two copies with Adam on the same batches; returns the per-step losses of both."""
    opt_a, opt_b = (torch.optim.Adam(n.parameters(), lr=1e-3, eps=adam_eps) for n in (net_a, net_b))
    losses = []
    for micro_step in range(steps):
        pairs = []
        for net, opt, fn, scale in ((net_a, opt_a, loss_a_fn, 1.0), (net_b, opt_b, loss_b_fn, scale_b)):
            loss, other = fn(net, micro_step)
            opt.zero_grad()
            (scale * loss).backward()
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(net.parameters(), max_grad_norm)
            opt.step()
            pairs.append((loss.detach(), other.detach()))
        losses.append(pairs)
    return losses


@pytest.fixture(scope="module")
def digits8():
    return load_digits_images(resolution=8, split="train")[0]


def test_dsm_on_a_score_net_equals_epsilon_loss_on_it_reparameterised(digits8):
    """VE: s_theta trained by DSM and eps_theta = -sigma s_theta trained by the epsilon loss end with the same weights.

    (sigma s + z)^2 and (-sigma s - z)^2 are the same float (negation is exact), and so are their gradients, so the
    weights agree to the last bit; the asserted tolerance 1e-6 only leaves room for a different kernel order.
    """
    args = tiny_args("dsm")
    torch.manual_seed(0)
    net_a = networks.build_ncsn_unet(args)
    net_b = copy.deepcopy(net_a)
    objective = objectives.build_objective(args, digits8)
    scheduler = objective.noise_scheduler
    order = BatchOrder(len(digits8), 8, seed=0)

    def batch(micro_step):
        clean, noise, levels = data.draw_batch(digits8, order, micro_step, 0, objective, args)
        sigma = levels if levels.is_floating_point() else scheduler.sigmas[levels]  # log_uniform (default): sigmas
        return clean, noise, levels, sigma

    def dsm(net, k):  # the script's own training step
        clean, noise, levels, _ = batch(k)
        return objectives.training_losses(net, scheduler, clean, noise, levels, scheduler.sigmas)

    def epsilon(net, k):  # the same network read as eps_theta(x, sigma) = -sigma s_theta(x, sigma)
        clean, noise, _, sigma = batch(k)
        eps = epsilon_from_score(net(clean + append_dims(sigma, 4) * noise, sigma).sample, append_dims(sigma, 4))
        return objectives.objective_losses(eps, noise, sigma, "epsilon")

    losses = train_pair(net_a, net_b, dsm, epsilon)
    for (loss_a, logged_eps_a), (loss_b, logged_dsm_b) in losses:
        assert torch.equal(loss_a, logged_eps_a)  # the logged epsilon form of the DSM run is the same number
        torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=0)
        torch.testing.assert_close(logged_dsm_b, loss_b, rtol=1e-6, atol=0)
    assert losses[-1][0][0] != losses[0][0][0]  # the weights did move
    assert max_difference(net_a.state_dict(), net_b.state_dict()) <= 1e-6


def test_epsilon_on_ddpm_net_equals_dsm_on_it_reparameterised(digits8):
    """VP: eps_theta(x_t, t) by the epsilon loss, and s = -eps_theta / sqrt(1 - abar_t) by DSM at sigma = sqrt(1 -
    abar_t): same weights. sigma * (-eps / sigma) rounds eps by <= 1 ulp, so the gradients agree to float32 rounding
    (~1e-7 relative). Adam divides each gradient by its own running size, so components that are mostly rounding
    noise can move by up to lr per step differently; observed 3.6e-6 after 4 steps at lr 1e-3 (weights moved by
    >3e-3), asserted <= 1e-5, i.e. 1% of one step."""
    args = tiny_args("epsilon")
    torch.manual_seed(0)
    net_a = networks.build_ddpm_unet(args)
    net_b = copy.deepcopy(net_a)
    objective = objectives.build_objective(args, digits8)
    scheduler = objective.noise_scheduler
    alphas_cumprod = scheduler.alphas_cumprod
    order = BatchOrder(len(digits8), 8, seed=0)

    def epsilon(net, k):  # the script's own training step
        clean, noise, t = data.draw_batch(digits8, order, k, 0, objective, args)
        return objectives.training_losses(net, scheduler, clean, noise, t, alphas_cumprod)

    def dsm(net, k):
        clean, noise, t = data.draw_batch(digits8, order, k, 0, objective, args)
        sigma = (1 - alphas_cumprod[t]).sqrt()
        score = score_from_epsilon(net(scheduler.add_noise(clean, noise, t), t).sample, append_dims(sigma, 4))
        return objectives.objective_losses(score, noise, sigma, "score")

    start = copy.deepcopy(net_a.state_dict())
    losses = train_pair(net_a, net_b, epsilon, dsm)
    for (loss_a, logged_dsm_a), (loss_b, _) in losses:
        torch.testing.assert_close(logged_dsm_a, loss_a, rtol=1e-6, atol=0)
        torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=0)
    assert max_difference(net_a.state_dict(), start) > 3e-3  # 4 Adam steps at lr 1e-3 moved the weights
    assert max_difference(net_a.state_dict(), net_b.state_dict()) <= 1e-5


def test_paper_scale_sum_over_pixels_gives_the_same_weights_under_adam(digits8):
    """The paper's per-sample loss 1/2 sum_pixels (sigma s + z)^2 is D/2 = 32 times diffusers' mean. Adam's step
    m / (sqrt(v) + eps) is free of that scale except through eps: with eps = 0 the two runs are bit-identical (32 is a
    power of two, so even the rounding scales exactly). With the default eps = 1e-8 they are not: at initialisation
    some gradients are ~1e-8, where eps dominates the mean form's denominator but not the sum form's. Gradient
    clipping is not scale-free either (it acts only on steps whose norm passes the threshold). Hence the script uses the mean form for both objectives, so that a learning
    rate, eps and --max_grad_norm mean the same for both."""
    args = tiny_args("dsm")
    torch.manual_seed(0)
    nets = [networks.build_ncsn_unet(args)]
    nets += [copy.deepcopy(nets[0]) for _ in range(3)]
    objective = objectives.build_objective(args, digits8)
    scheduler = objective.noise_scheduler
    order = BatchOrder(len(digits8), 8, seed=0)
    half_dim = digits8[0].numel() / 2  # D / 2 = 32

    def dsm(net, k):
        clean, noise, levels = data.draw_batch(digits8, order, k, 0, objective, args)
        return objectives.training_losses(net, scheduler, clean, noise, levels, scheduler.sigmas)

    train_pair(nets[0], nets[1], dsm, dsm, max_grad_norm=0, scale_b=half_dim, adam_eps=0.0)
    assert max_difference(nets[0].state_dict(), nets[1].state_dict()) == 0
    train_pair(nets[2], nets[3], dsm, dsm, max_grad_norm=0, scale_b=half_dim, adam_eps=1e-8)
    assert max_difference(nets[2].state_dict(), nets[3].state_dict()) > 1e-5


def test_paper_form_is_half_dim_times_the_mean():
    """Pins the constant: 1/2 sum over D pixels of (sigma s + z)^2, averaged over the batch, is D/2 x dsm_loss."""
    score, noise, sigma = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4), torch.tensor([0.5, 1.0, 2.0])
    paper = 0.5 * (append_dims(sigma, 4) * score + noise).pow(2).sum(dim=(1, 2, 3)).mean()
    torch.testing.assert_close(paper, 8.0 * dsm_loss(score, noise, sigma))


# ---------------------------------------------------------------------------------------------------------------------
# End to end with `accelerate launch`
# ---------------------------------------------------------------------------------------------------------------------


def test_end_to_end_dsm_one_process_equals_two_processes(tmp_path):
    """One process with batch 8 and two gloo processes with batch 4 each see the same global batches and noise (each
    process draws the global batch's noise and keeps its shard), so they end with the same weights up to the order
    of float32 sums in DDP's gradient all-reduce: tolerance 1e-5 on weights of order 0.1 after 4 Adam steps at lr 2e-3.
    """
    from ncsn_diffusers import NCSNPipeline

    one, two = tmp_path / "one", tmp_path / "two"
    common = [*TINY, "--max_train_steps", "4", "--checkpointing_steps", "2", "--seed", "3"]
    launch(*common, "--output_dir", one, timeout=180)
    # 32 s on 2 loaded cores; a worker hung at exit is killed and named at 240 s, not left to the CI
    launch(*common, "--output_dir", two, "--train_batch_size", "4", num_processes=2, timeout=240)

    for out in (one, two):
        assert sorted(p.name for p in out.iterdir()) == [
            "README.md", "checkpoint-2", "checkpoint-4", "logs", "model_index.json", "samples", "scheduler",
            "training_args.json", "unet",
        ]  # fmt: skip
        assert [p.name for p in (out / "samples").iterdir()] == ["step_000004.png"]
        records = log_records(out)
        assert [r["step"] for r in records] == [2, 4]
        for record in records:  # both forms of the loss are logged, and they are the same number
            assert record["loss_dsm"] == pytest.approx(record["loss_epsilon"], rel=1e-6)
    # One process wrote one of everything: two random states (one per rank) but one model and one optimizer.
    # safetensors and JSON only (no pickle): one torch RNG state per rank (dropout), one model, optimizer and EMA.
    assert sorted(p.name for p in (two / "checkpoint-4").iterdir()) == [
        "ema.safetensors", "model.safetensors", "optimizer.safetensors", "rng_state_0.safetensors",
        "rng_state_1.safetensors", "training_state.json",
    ]  # fmt: skip
    assert max_difference(unet_weights(one), unet_weights(two)) <= 1e-5
    assert max_difference(unet_weights(one), load_file(one / "checkpoint-4" / "model.safetensors")) > 0  # EMA saved
    assert log_records(one)[-1]["loss_dsm"] == pytest.approx(log_records(two)[-1]["loss_dsm"], rel=1e-5)

    config = json.loads((one / "scheduler" / "scheduler_config.json").read_text())
    assert config["data_range"] == [-1.0, 1.0]
    # The default sampler: predictor-corrector over the training ladder's range, 50 levels x (k = 1 + 1) = 100 calls.
    assert config["_class_name"] == "PredictorCorrectorScheduler"
    sampler = (
        config["sigma_max"],
        config["sigma_min"],
        config["num_noise_levels"],
        config["snr"],
        config["predictor"],
    )
    assert sampler == (1.0, 0.02, 50, 0.25, "ancestral")
    card = (one / "README.md").read_text()
    assert "NCSNUNet2DModel" in card and "max_train_steps" in card and "sklearn" in card

    pipe = NCSNPipeline.from_pretrained(one)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all()


def test_end_to_end_epsilon_pushes_and_loads_in_ncsn_and_ddpm_pipelines(tmp_path):
    """--objective epsilon saves the best measured sampler of an epsilon model, diffusers' DPMSolverMultistepScheduler
    (DPM-Solver++) at 20 calls (docs/sampling.md): the folder samples with it in NCSNPipeline and in
    stock DDPMPipeline, and by ancestral sampling with DDPMScheduler; --push_to_hub uploads it (no checkpoints) to a
    private repo of the local Hub stand-in with the real huggingface_hub client."""
    from diffusers import DDPMPipeline, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
    from hub_stand_in import LocalHub

    from ncsn_diffusers import NCSNPipeline

    out = tmp_path / "eps"
    with LocalHub(tmp_path / "hub") as hub:
        hub_env = {
            "HF_ENDPOINT": hub.endpoint,
            "HF_HUB_OFFLINE": "0",
            "HF_TOKEN": hub.token,
            "HF_HUB_DISABLE_XET": "1",
        }
        launch("--objective", "epsilon", *TINY, "--max_train_steps", "2", "--checkpointing_steps", "2",
               "--output_dir", out, "--push_to_hub", "--hub_model_id", "test-user/ncsn-eps", "--hub_private_repo",
               env=hub_env)  # fmt: skip
        record = hub.store.record("model", "test-user/ncsn-eps")
    assert record["private"] is True
    pushed = set(record["commits"][record["head"]]["files"])
    assert {"model_index.json", "README.md", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
            "scheduler/scheduler_config.json", "samples/step_000002.png"} <= pushed  # fmt: skip
    assert not any(name.startswith(("checkpoint-", "logs/")) for name in pushed)
    assert "test-user/ncsn-eps" in (out / "README.md").read_text()

    record = log_records(out)[-1]
    assert record["loss_epsilon"] == pytest.approx(record["loss_dsm"], rel=1e-5)
    config = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert config["_class_name"] == "DPMSolverMultistepScheduler" and config["prediction_type"] == "epsilon"
    assert config["algorithm_type"] == "dpmsolver++"
    assert (config["num_train_timesteps"], config["beta_schedule"]) == (1000, "linear")
    assert config["_default_num_inference_steps"] == 20  # where diffusers' DDPMPipeline ignores it silently
    assert "default_num_inference_steps" not in json.loads((out / "model_index.json").read_text())

    pipe = NCSNPipeline.from_pretrained(out)  # DPM-Solver++, 20 calls
    assert isinstance(pipe.unet, UNet2DModel) and isinstance(pipe.scheduler, DPMSolverMultistepScheduler)
    calls = []
    pipe.unet.register_forward_hook(lambda *args: calls.append(1))
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all() and len(calls) == 20
    stock = DDPMPipeline.from_pretrained(out)  # every component is diffusers' own
    generator = torch.Generator().manual_seed(0)
    stock_images = stock(batch_size=2, generator=generator, num_inference_steps=20, output_type="np").images
    np.testing.assert_allclose(stock_images, images, atol=1e-5)  # DDPMPipeline's loop: the same images

    ddpm = DDPMPipeline.from_pretrained(out, scheduler=DDPMScheduler.from_pretrained(out, subfolder="scheduler"))
    images = ddpm(batch_size=2, num_inference_steps=5, generator=torch.Generator().manual_seed(0), output_type="np")
    assert images.images.shape == (2, 8, 8, 1)
    assert ddpm.scheduler.config.num_train_timesteps == 1000 and ddpm.scheduler.config.prediction_type == "epsilon"


# ---------------------------------------------------------------------------------------------------------------------
# Nothing lost: kill -9 and resume
# ---------------------------------------------------------------------------------------------------------------------


def sigkill_after_checkpoint(argv, output_dir: Path, log_path: Path, step: int) -> int:
    """Starts `train_ncsn.py argv` in its own session, kills it with SIGKILL once `output_dir` holds a complete
    checkpoint of at least `step`, checks it had not finished, and returns the step of its latest checkpoint."""
    log = log_path.open("w")  # a file, not a pipe: a full pipe would stall the child
    process = subprocess.Popen(
        [sys.executable, str(REPO / "train_ncsn.py"), *map(str, argv)],
        env=subprocess_env(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while latest_checkpoint(output_dir) is None or int(latest_checkpoint(output_dir).name.split("-")[1]) < step:
        assert process.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, f"the run never reached checkpoint-{step}"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    log.close()
    assert not (output_dir / "model_index.json").exists(), "the run finished before it was killed"
    return int(latest_checkpoint(output_dir).name.split("-")[1])


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    """A real process is killed with SIGKILL mid-run (possibly mid-checkpoint); `--resume_from_checkpoint latest`
    continues from the last complete checkpoint and ends bit-identical to an uninterrupted run (tolerance 0 on CPU:
    weights, optimizer, lr schedule, EMA and the (seed, step)-derived draws are all restored exactly)."""
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    common = [*TINY, "--max_train_steps", "30", "--checkpointing_steps", "1", "--checkpoints_total_limit", "3"]
    stopped_at = sigkill_after_checkpoint([*common, "--output_dir", killed], killed, tmp_path / "killed.log", 3)
    assert 3 <= stopped_at < 30
    (killed / f"checkpoint-{stopped_at + 5}.tmp").mkdir()  # a partial checkpoint from the kill is never picked up

    run_main(*common, "--output_dir", killed, "--resume_from_checkpoint", "latest")
    run_main(*common, "--output_dir", reference)

    assert not list(killed.glob("*.tmp*"))
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == ["checkpoint-28", "checkpoint-29", "checkpoint-30"]
    assert max_difference(unet_weights(killed), unet_weights(reference)) == 0  # EMA weights
    for name in ("model.safetensors",):  # the raw weights of the last checkpoint
        assert (
            max_difference(load_file(killed / "checkpoint-30" / name), load_file(reference / "checkpoint-30" / name))
            == 0
        )
    # The log continues without duplicates: entries the killed run wrote after its checkpoint were dropped.
    assert [r["step"] for r in log_records(killed)] == [r["step"] for r in log_records(reference)]
    assert [r["loss_dsm"] for r in log_records(killed)] == [r["loss_dsm"] for r in log_records(reference)]


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    # Adam's first step moves every weight by ~lr; at lr 1e30 the next forward overflows float32.
    out = tmp_path / "nan"
    with pytest.raises(FloatingPointError, match=r"NaN or infinite at step 2\b.*checkpoint-1"):
        run_main(*TINY, "--max_train_steps", "6", "--checkpointing_steps", "1", "--learning_rate", "1e30",
                 "--lr_warmup_steps", "0", "--lr_scheduler", "constant", "--max_grad_norm", "0", "--output_dir", out)  # fmt: skip
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert not (out / "model_index.json").exists()


# ---------------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset_name", "x/y", "--train_data_dir", "d"], "contradict each other"),
        (["--noise_ladder", "ncsnv2", "--sigma_max", "3"], "contradict(s) --noise_ladder ncsnv2"),
        (["--objective", "epsilon", "--sigma_max", "3"], "--objective epsilon uses the DDPM schedule"),
        (["--sigma_min", "2", "--sigma_max", "1"], "Need 0 < --sigma_min"),
        (["--channels", "2"], "invalid choice"),
        (["--train_batch_size", "0"], "--train_batch_size must be >= 1"),
        (["--num_epochs", "0"], "--num_epochs must be >= 1"),
        (["--hub_model_id", "me/model"], "only used with --push_to_hub"),
        (["--resume_from_checkpoint", "latest", "--overwrite_output_dir"], "contradict each other"),
        (["--objective", "epsilon", "--sampler", "stochastic_heun"], "--sampler stochastic_heun samples score models"),
        # W&B uploads sys.argv: the token would leave the machine
        (
            ["--hub_token", "hf_x", "--report_to", "wandb"],
            "Drop --hub_token and set HF_TOKEN or log in once with `hf auth login`",
        ),
        (["--hub_token", "hf_x", "--report_to", "all"], "--report_to all: Weights & Biases"),
        # logs inside an uploaded folder would be pushed with it, or mixed with the pipeline's files
        (["--logging_dir", "unet/tb"], "--logging_dir unet/tb lies in unet, which the run writes itself"),
    ],
)
def test_contradictory_or_invalid_flags_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_ncsn.parse_args(argv)
    assert exit_info.value.code != 0
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, steps, epochs",
    [
        ([], 3000, None),  # the default run: the digits preset's fixed step count
        (["--num_epochs", "5"], None, 5),
        (["--max_train_steps", "7"], 7, None),
        (["--model_preset", "cifar10"], None, 100),  # other presets keep diffusers' 100 epochs
    ],
)
def test_training_length_defaults_by_preset_unless_given(argv, steps, epochs):
    args = train_ncsn.parse_args(argv)
    assert (args.max_train_steps, args.num_epochs) == (steps, epochs)


def test_saved_sampler_starts_at_half_of_technique_1s_sigma_1_unless_told():
    """--noise_ladder ncsnv2 (sigma_1 = the largest pairwise distance) samples from sigma_1 / 2; an explicit ladder
    from its own sigma_1; --sampling_sigma_max overrides both and must lie in (sigma_L, sigma_1]."""
    from types import SimpleNamespace

    ladder = SimpleNamespace(sigma_max=17.0, sigma_min=0.02)
    start = sampler.sampling_sigma_max
    assert start(TrainingConfig().resolve(), ladder) == 8.5
    assert start(TrainingConfig(sigma_max=17.0).resolve(), ladder) == 17.0
    assert start(TrainingConfig(sampling_sigma_max=5.0).resolve(), ladder) == 5.0
    with pytest.raises(ValueError, match=r"must lie in \(sigma_L, sigma_1\]"):
        start(TrainingConfig(sampling_sigma_max=20.0).resolve(), ladder)


@pytest.mark.parametrize("calls, levels", [(100, 50), (49, 25)])
def test_saved_stochastic_heun_sampler_spans_the_same_range_in_the_given_calls(calls, levels):
    from types import SimpleNamespace

    from ncsn_diffusers import NCSNUNet2DModel, StochasticHeunScheduler

    args = TrainingConfig(sampler="stochastic_heun", sampling_calls=calls).resolve()
    ladder = SimpleNamespace(
        config=SimpleNamespace(noise_space="ve", sigma_max=17.0, sigma_min=0.02, data_range=(-1.0, 1.0))
    )
    pipe = sampler.make_pipeline(NCSNUNet2DModel.from_preset("tiny"), ladder, args)
    scheduler = pipe.scheduler
    assert isinstance(scheduler, StochasticHeunScheduler) and scheduler.config.num_noise_levels == levels
    assert (scheduler.config.sigma_max, scheduler.config.sigma_min) == (8.5, 0.02)
    assert scheduler.config.data_range == (-1.0, 1.0)
    scheduler.set_timesteps()
    assert len(scheduler.timesteps) == 2 * levels - 1 <= calls


def test_secrets_are_left_out_of_every_record_of_the_arguments():
    """training_args.json and the trackers' config (TensorBoard, W&B) are both written from public_args."""
    args = train_ncsn.parse_args(["--push_to_hub", "--hub_token", "hf_x"])
    assert args.hub_token == "hf_x"  # usable for the upload
    assert "hub_token" not in training_config.public_args(args) and "hf_x" not in json.dumps(
        training_config.public_args(args)
    )


def test_bad_data_and_folders_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="--resolution 10 cannot be taken by --model_preset digits.*multiple of 4"):
        run_main("--resolution", "10", "--output_dir", tmp_path / "a", "--report_to", "none")
    with pytest.raises(ValueError, match="does not exist"):
        run_main(*TINY, "--train_data_dir", tmp_path / "missing", "--output_dir", tmp_path / "b")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="contains no image files"):
        run_main(*TINY, "--train_data_dir", tmp_path / "empty", "--output_dir", tmp_path / "c")

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("not ours")
    with pytest.raises(ValueError, match="holds files this script did not write.*thesis.tex"):
        run_main(*TINY, "--output_dir", foreign)

    earlier = tmp_path / "earlier"
    (earlier / "checkpoint-5").mkdir(parents=True)
    (earlier / "checkpoint-5" / "training_state.json").write_text('{"step": 5}')  # written by train_ncsn.py
    with pytest.raises(ValueError, match="holds checkpoints of an earlier run.*--resume_from_checkpoint latest"):
        run_main(*TINY, "--output_dir", earlier)


def test_image_folder_with_mixed_modes_and_a_corrupt_file_trains_in_rgb_under_bf16(tmp_path, caplog):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i, mode in enumerate(["L", "RGB", "RGBA", "P"] * 3):
        image = Image.fromarray(rng.integers(0, 255, (10 + i, 12, 3), dtype=np.uint8)).convert(mode)
        image.save(data / f"{i}.png")
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    out = tmp_path / "out"
    run_main(*TINY, "--train_data_dir", data, "--max_train_steps", "1", "--channels", "3", "--output_dir", out,
             "--mixed_precision", "bf16")  # fmt: skip
    assert "broken.png" in caplog.text
    assert math.isfinite(log_records(out)[-1]["loss_dsm"])
    assert json.loads((out / "unet" / "config.json").read_text())["in_channels"] == 3
    assert Image.open(out / "samples" / "step_000001.png").mode == "RGB"


# ---------------------------------------------------------------------------------------------------------------------
# Security and reliability
# ---------------------------------------------------------------------------------------------------------------------


def all_files(root):
    return sorted(p for p in Path(root).rglob("*") if p.is_file())


def test_hub_token_and_local_paths_are_never_written_or_uploaded(tmp_path):
    """One real run pushes to the loopback Hub with --hub_token (no cached login, no HF_TOKEN), TensorBoard on and
    --logging_dir tb; it uploads the allow-list only (pipeline, card, its own grids).
    The token is in no byte of any local file (training_args.json, hparams.yml, event files, card), of anything the
    Hub stored, or of the log; the card names the data folder, never its absolute path."""
    from hub_stand_in import LocalHub

    token = "hf_SeCrEt4Trust8Regression15Token"
    data = tmp_path / "private-home" / "my-pictures"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(data / f"{i}.png")
    out = tmp_path / "out"
    with LocalHub(tmp_path / "hub", token=token) as hub:
        env = {**subprocess_env(), "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
               "HF_HOME": str(tmp_path / "hf-home")}  # fmt: skip
        env.pop("HF_TOKEN", None)
        (out / "samples").mkdir(parents=True)
        (out / "samples" / "mine.png").write_bytes(b"the user's own picture")
        argv = [*TINY, "--report_to", "tensorboard", "--logging_dir", "tb", "--max_train_steps", "2",
                "--checkpointing_steps", "1", "--train_data_dir", data, "--output_dir", out, "--push_to_hub",
                "--hub_model_id", "test-user/x", "--hub_token", token]  # fmt: skip
        result = subprocess.run([sys.executable, str(REPO / "train_ncsn.py"), *map(str, argv)], env=env, cwd=REPO,
                                capture_output=True, text=True, timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stderr[-5000:]
        record = hub.store.record("model", "test-user/x")
    pushed = set(record["commits"][record["head"]]["files"])
    local = all_files(out)
    assert any("events.out.tfevents" in p.name for p in local) and any(p.name == "hparams.yml" for p in local)
    stored = all_files(tmp_path / "hub")  # every blob the Hub stored, and its records
    assert len(stored) > len(pushed)
    for path in local + stored:
        assert token.encode() not in path.read_bytes(), path
    assert token not in result.stdout + result.stderr
    for path in stored:  # local paths stay local (training_args.json and the TensorBoard logs keep them)
        assert str(data.parent).encode() not in path.read_bytes(), path
    # The allow-list, exactly: a custom --logging_dir (tb/: local paths in hparams.yml), training_args.json, the
    # checkpoints and a file of the user's in samples/ stay local. The Hub's repo creation commits
    # .gitattributes; the U-Net folder holds its class's file (for loading without this package).
    assert pushed == {".gitattributes", "README.md", "model_index.json", "unet/config.json", "unet/unet_ncsn.py",
                      "unet/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json",
                      "samples/step_000002.png"}  # fmt: skip
    assert (out / "tb" / "train_log.jsonl").is_file() and (out / "samples" / "mine.png").is_file()
    assert json.loads((out / "training_args.json").read_text())["train_data_dir"] == str(data)  # stays local
    card = (out / "README.md").read_text()
    assert "`my-pictures`" in card and str(tmp_path) not in card


def test_resume_ignores_planted_pickles_tolerates_a_torn_log_and_names_bad_settings(tmp_path, caplog):
    """Payloads planted under every name accelerate's save_state uses never run; a torn last log line is dropped
    with a warning; a damaged latest checkpoint, another --model_preset / --objective / --use_ema, or a
    --max_train_steps below the checkpoint are refused naming the fix; another seed or batch size is warned about."""
    from pickle_payload import plant_payloads

    out, marker = tmp_path / "out", tmp_path / "payload-ran"
    common = [*TINY, "--logging_steps", "1", "--checkpointing_steps", "1", "--output_dir", out]
    run_main(*common, "--max_train_steps", "2")
    # accelerate's load_state unpickled custom_checkpoint_0.pkl (the EMA) with weights_only=False
    planted = ["custom_checkpoint_0.pkl", "pytorch_model.bin", "notes.pkl"]
    plant_payloads(out / "checkpoint-2", marker, planted)
    with (out / "logs" / "train_log.jsonl").open("a") as f:
        f.write('{"step": 3, "loss_d')  # torn by a power loss
    caplog.clear()
    run_main(*common, "--max_train_steps", "3", "--resume_from_checkpoint", "latest")
    assert not marker.exists()
    assert "partial line" in caplog.text and all(name in caplog.text for name in planted)
    assert [r["step"] for r in log_records(out)] == [1, 2, 3]

    resume = [*common, "--resume_from_checkpoint", "latest"]
    for flags, message in [
        (["--model_preset", "digits"], "trained with --model_preset tiny, this run has --model_preset digits"),
        (["--objective", "epsilon"], "trained with --objective dsm, this run has --objective epsilon"),
        (["--no-use_ema"], "trained with --use_ema, this run has --no-use_ema"),
        (["--max_train_steps", "2"], "at step 3, past --max_train_steps 2; pass --max_train_steps >= 3"),
    ]:
        with pytest.raises(ValueError, match=message):
            run_main(*resume, "--max_train_steps", "4", *flags)
    caplog.clear()
    planted = [
        "optimizer.bin",
        "scheduler.bin",
        "random_states_0.pkl",
        "custom_checkpoint_0.pkl",
        "model.safetensors.pkl",
    ]
    plant_payloads(out / "checkpoint-3", marker, planted)  # every other name accelerate's save_state writes
    run_main(*resume, "--max_train_steps", "4", "--seed", "1", "--train_batch_size", "4")
    assert "--seed 0, this run has --seed 1" in caplog.text and "--train_batch_size 8" in caplog.text
    assert all(name in caplog.text for name in planted)

    weights = out / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    with pytest.raises(
        ValueError, match=r"checkpoint-4 is damaged: model.safetensors.*resume_from_checkpoint .*checkpoint-3"
    ):
        run_main(*resume, "--max_train_steps", "5")
    assert not marker.exists()


def test_resuming_an_earlier_checkpoint_moves_the_later_ones_out_of_reach(tmp_path, caplog):
    """The issue's scenario: checkpoints 5..40, then `--resume_from_checkpoint checkpoint-10
    --checkpoints_total_limit 1 --max_train_steps 25`. The later checkpoints are moved aside (and say so) instead of
    being resumed by `latest` or deleted; the new lineage keeps its own checkpoint-25 and a card saying 25 steps."""
    out = tmp_path / "out"
    common = [*TINY, "--logging_steps", "5", "--checkpointing_steps", "5", "--output_dir", out]
    run_main(*common, "--max_train_steps", "40")
    run_main(*common, "--max_train_steps", "25", "--checkpoints_total_limit", "1", "--resume_from_checkpoint",
             out / "checkpoint-10")  # fmt: skip
    names = sorted(p.name for p in out.iterdir() if "checkpoint" in p.name)
    assert names[-1] == "checkpoint-25" and latest_checkpoint(out) == out / "checkpoint-25"
    abandoned = sorted(int(name.split("-")[2]) for name in names if name.startswith("abandoned-checkpoint-"))
    assert abandoned == [15, 20, 25, 30, 35, 40]
    assert "checkpoint-40 is past the resumed step 10" in caplog.text and "abandoned-checkpoint-40-" in caplog.text
    assert "max_train_steps | 25" in (out / "README.md").read_text().replace("`", "")
    assert [r["step"] for r in log_records(out)] == [5, 10, 15, 20, 25]
    run_main(*common, "--max_train_steps", "25", "--resume_from_checkpoint", "latest")  # the new lineage's end
    bare = train_ncsn.parse_args([*map(str, common), "--resume_from_checkpoint", "checkpoint-25"])
    assert run_dir.resume_path(bare) == out / "checkpoint-25"  # a bare name is looked up in --output_dir


def tree_state(root):
    """Every entry under root with its bytes' hash and mtime: what must not change."""
    import hashlib

    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir",
                                   p.stat().st_mtime_ns)
        for p in sorted(Path(root).rglob("*"))
    }  # fmt: skip


def test_a_saved_pipeline_or_a_live_run_in_output_dir_is_never_touched(tmp_path):
    import fcntl

    LOCK_FILE = ".train_ncsn.lock"
    mine = tmp_path / "mine"
    (mine / "unet").mkdir(parents=True)
    (mine / "model_index.json").write_text('{"_class_name": "NCSNPipeline"}')
    (mine / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(os.urandom(64))
    (mine / "README.md").write_text("my model")
    before = tree_state(mine), mine.stat().st_mtime_ns
    for flags in ([], ["--resume_from_checkpoint", "latest"]):
        with pytest.raises(ValueError, match="holds a saved pipeline.*--overwrite_output_dir"):
            run_main(*TINY, "--max_train_steps", "1", "--output_dir", mine, *flags)
        assert (tree_state(mine), mine.stat().st_mtime_ns) == before

    live = tmp_path / "live"
    live.mkdir()
    fd = os.open(live / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"4242")
    before = tree_state(live)
    with pytest.raises(RuntimeError, match=r"in use by another training run \(pid 4242"):
        run_main(*TINY, "--max_train_steps", "1", "--output_dir", live)
    assert tree_state(live) == before
    os.close(fd)  # as if the holder were killed: the file stays, the lock is gone
    run_main(*TINY, "--max_train_steps", "1", "--output_dir", live)
    assert (live / "model_index.json").is_file() and not (live / LOCK_FILE).exists()


def test_failed_runs_name_the_fix_and_leave_no_empty_folders(tmp_path):
    out = tmp_path / "new" / "run"
    with pytest.raises(ValueError, match="does not exist"):
        run_main(*TINY, "--train_data_dir", tmp_path / "missing", "--output_dir", out)
    assert not (tmp_path / "new").exists()  # the folders this run created are gone

    with pytest.raises(FloatingPointError, match="No checkpoint was written yet .*--overwrite_output_dir") as info:
        run_main(*TINY, "--max_train_steps", "6", "--checkpointing_steps", "100", "--learning_rate", "1e30",
                 "--lr_warmup_steps", "0", "--lr_scheduler", "constant", "--max_grad_norm", "0", "--output_dir", out)  # fmt: skip
    assert "None" not in str(info.value)
    assert sorted(p.name for p in out.iterdir()) == ["training_args.json"]  # the empty logs/ went, the record stays


# ---------------------------------------------------------------------------------------------------------------------
# Ownership by content
# ---------------------------------------------------------------------------------------------------------------------


def test_a_foreign_checkpoint_is_refused_and_overwrite_deletes_only_the_runs_own_files(tmp_path):
    """Catches: `latest` skipping another tool's checkpoint-10 and the save at step 10 deleting it; and
    --overwrite_output_dir deleting samples/, logs/ and checkpoint-* wholesale, the user's files in them included."""
    out = tmp_path / "out"
    (out / "checkpoint-10").mkdir(parents=True)
    (out / "checkpoint-10" / "pytorch_model.bin").write_text("w")
    before = tree_state(out)
    for flags in ([], ["--resume_from_checkpoint", "latest"], ["--overwrite_output_dir"]):
        with pytest.raises(ValueError, match="holds checkpoint-10, which train_ncsn.py did not write.*Move it out"):
            run_main(*TINY, "--max_train_steps", "10", "--checkpointing_steps", "10", "--output_dir", out, *flags)
        assert tree_state(out) == before

    run = tmp_path / "run"
    common = [*TINY, "--logging_steps", "1", "--checkpointing_steps", "1", "--output_dir", run]
    run_main(*common, "--max_train_steps", "2")
    mine = {"samples/mine.png": b"picture", "logs/notes.txt": b"notes", "checkpoint-2/notes.txt": b"more notes"}
    for name, content in mine.items():
        (run / name).write_bytes(content)
    run_main(*common, "--max_train_steps", "1", "--overwrite_output_dir")
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["mine.png", "step_000001.png"]
    assert (run / "samples" / "mine.png").read_bytes() == b"picture"
    assert (run / "logs" / "notes.txt").read_bytes() == b"notes"
    assert [r["step"] for r in log_records(run)] == [1]  # the earlier run's log went
    assert [step for step, _ in complete_checkpoints(run)] == [1]
    (aside,) = run.glob("abandoned-checkpoint-2-*")  # the earlier checkpoint's own files went, the notes moved aside
    assert [p.name for p in aside.iterdir()] == ["notes.txt"] and (aside / "notes.txt").read_bytes() == b"more notes"


def test_runs_sharing_a_logging_dir_each_keep_their_own_log(tmp_path):
    """Catches: a second run with the same absolute (or ../) --logging_dir truncating the first run's log."""
    shared, a, b = tmp_path / "ncsn-logs", tmp_path / "A", tmp_path / "B"
    common = [*TINY, "--max_train_steps", "2", "--logging_steps", "1"]
    run_main(*common, "--output_dir", a, "--logging_dir", shared)
    log_a = (shared / "A" / "train_log.jsonl").read_bytes()
    run_main(*common, "--output_dir", b, "--logging_dir", "../ncsn-logs")
    assert (shared / "A" / "train_log.jsonl").read_bytes() == log_a
    assert [json.loads(line)["step"] for line in (shared / "B" / "train_log.jsonl").read_text().splitlines()] == [1, 2]
    assert not (a / "logs").exists() and not (b / "logs").exists()

    before = tree_state(shared)
    with pytest.raises(ValueError, match=r"holds the logs of the run of --output_dir .*A,.*another --logging_dir"):
        run_main(*common, "--output_dir", tmp_path / "elsewhere" / "A", "--logging_dir", shared)
    assert tree_state(shared) == before
    (shared / "A" / "notes.txt").write_text("mine")
    run_main(*common, "--output_dir", a, "--logging_dir", shared, "--overwrite_output_dir", "--max_train_steps", "1")
    assert (shared / "A" / "notes.txt").read_text() == "mine"  # the run's own subfolder: only its files replaced
    assert [json.loads(line)["step"] for line in (shared / "A" / "train_log.jsonl").read_text().splitlines()] == [1]


# The script end to end with --objective ssm.
def test_train_ncsn_objective_ssm_end_to_end(tmp_path):
    run_main(*TINY, "--objective", "ssm", "--num_projections", "2", "--max_train_steps", "2", "--output_dir", tmp_path)
    (record,) = log_records(tmp_path)
    assert set(record) >= {"loss_ssm", "loss_dsm"}
    assert record["loss_dsm"] == pytest.approx(record["loss_ssm"] + 1, abs=0.5)  # equal in expectation
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    card = (tmp_path / "README.md").read_text()
    assert "sliced score matching" in card and "denoising score matching over" not in card
