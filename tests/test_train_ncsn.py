"""train_ncsn.py: the objectives' equivalence, end-to-end `accelerate launch` runs (one and two processes, both
objectives), kill-and-resume, the NaN stop, and clear errors for bad input.

Subprocesses are few (each `accelerate launch` pays seconds of imports); everything else calls the script in-process.
"""

import copy
import importlib.util
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

from ncsn_diffusers.digits import load_digits_images
from ncsn_diffusers.losses import dsm_loss
from ncsn_diffusers.parameterization import append_dims, epsilon_from_score, score_from_epsilon
from ncsn_diffusers.training_utils import BatchOrder, latest_checkpoint

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("train_ncsn", REPO / "train_ncsn.py")
train_ncsn = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_ncsn)

# A few seconds per run: the smallest U-Net on 8x8 digits, 1 Langevin step per level for the final grid.
TINY = [
    "--model_preset", "tiny", "--resolution", "8", "--train_batch_size", "8", "--num_sample_images", "4",
    "--steps_per_level", "1", "--num_noise_levels", "4", "--report_to", "none", "--logging_steps", "2",
]  # fmt: skip


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
    """`accelerate launch train_ncsn.py ...`; two processes run data-parallel over gloo on the CPU."""
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
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
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
    return train_ncsn.parse_args(["--objective", objective, *TINY])


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
    net_a = train_ncsn.build_unet(args)
    net_b = copy.deepcopy(net_a)
    scheduler = train_ncsn.build_noise_scheduler(args, digits8)
    order = BatchOrder(len(digits8), 8, seed=0)

    def batch(micro_step):
        clean, noise, levels = train_ncsn.draw_batch(digits8, order, micro_step, 0, scheduler, args)
        sigma = scheduler.sigmas[levels]
        return clean, noise, levels, sigma

    def dsm(net, k):  # the script's own training step
        clean, noise, levels, _ = batch(k)
        return train_ncsn.training_losses(net, scheduler, clean, noise, levels, scheduler.sigmas)

    def epsilon(net, k):  # the same network read as eps_theta(x, sigma) = -sigma s_theta(x, sigma)
        clean, noise, _, sigma = batch(k)
        eps = epsilon_from_score(net(clean + append_dims(sigma, 4) * noise, sigma).sample, append_dims(sigma, 4))
        return train_ncsn.objective_losses(eps, noise, sigma, "epsilon")

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
    net_a = train_ncsn.build_unet(args)
    net_b = copy.deepcopy(net_a)
    scheduler = train_ncsn.build_noise_scheduler(args, digits8)
    alphas_cumprod = scheduler.alphas_cumprod
    order = BatchOrder(len(digits8), 8, seed=0)

    def epsilon(net, k):  # the script's own training step
        clean, noise, t = train_ncsn.draw_batch(digits8, order, k, 0, scheduler, args)
        return train_ncsn.training_losses(net, scheduler, clean, noise, t, alphas_cumprod)

    def dsm(net, k):
        clean, noise, t = train_ncsn.draw_batch(digits8, order, k, 0, scheduler, args)
        sigma = (1 - alphas_cumprod[t]).sqrt()
        score = score_from_epsilon(net(scheduler.add_noise(clean, noise, t), t).sample, append_dims(sigma, 4))
        return train_ncsn.objective_losses(score, noise, sigma, "score")

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
    nets = [train_ncsn.build_unet(args)]
    nets += [copy.deepcopy(nets[0]) for _ in range(3)]
    scheduler = train_ncsn.build_noise_scheduler(args, digits8)
    order = BatchOrder(len(digits8), 8, seed=0)
    half_dim = digits8[0].numel() / 2  # D / 2 = 32

    def dsm(net, k):
        clean, noise, levels = train_ncsn.draw_batch(digits8, order, k, 0, scheduler, args)
        return train_ncsn.training_losses(net, scheduler, clean, noise, levels, scheduler.sigmas)

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
    from ncsn_diffusers.pipeline_ncsn import NCSNPipeline

    one, two = tmp_path / "one", tmp_path / "two"
    common = [*TINY, "--max_train_steps", "4", "--checkpointing_steps", "2", "--seed", "3"]
    launch(*common, "--output_dir", one)
    launch(*common, "--output_dir", two, "--train_batch_size", "4", num_processes=2)

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
    assert (config["sigma_max"], config["sigma_min"], config["num_noise_levels"]) == (1.0, 0.02, 4)
    card = (one / "README.md").read_text()
    assert "NCSNUNet2DModel" in card and "max_train_steps" in card and "sklearn" in card

    pipe = NCSNPipeline.from_pretrained(one)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all()


def test_end_to_end_epsilon_pushes_and_loads_in_ncsn_and_ddpm_pipelines(tmp_path):
    """--objective epsilon saves a VP scheduler: the folder samples by annealed Langevin through score = -eps /
    sqrt(1 - abar_t) in NCSNPipeline and by ancestral sampling in stock DDPMPipeline; --push_to_hub uploads it (no
    checkpoints) to a private repo of the local Hub stand-in with the real huggingface_hub client."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    from hub_stand_in import LocalHub

    from ncsn_diffusers.pipeline_ncsn import NCSNPipeline

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
    assert (config["noise_space"], config["prediction_type"], config["data_range"]) == ("vp", "epsilon", [-1.0, 1.0])

    pipe = NCSNPipeline.from_pretrained(out)  # annealed Langevin through score = -eps / sqrt(1 - abar_t)
    assert isinstance(pipe.unet, UNet2DModel)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all()

    ddpm = DDPMPipeline.from_pretrained(out, scheduler=DDPMScheduler.from_pretrained(out, subfolder="scheduler"))
    images = ddpm(batch_size=2, num_inference_steps=5, generator=torch.Generator().manual_seed(0), output_type="np")
    assert images.images.shape == (2, 8, 8, 1)
    assert ddpm.scheduler.config.num_train_timesteps == 1000 and ddpm.scheduler.config.prediction_type == "epsilon"


# ---------------------------------------------------------------------------------------------------------------------
# Nothing lost: kill -9 and resume
# ---------------------------------------------------------------------------------------------------------------------


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    """A real process is killed with SIGKILL mid-run (possibly mid-checkpoint); `--resume_from_checkpoint latest`
    continues from the last complete checkpoint and ends bit-identical to an uninterrupted run (tolerance 0 on CPU:
    weights, optimizer, lr schedule, EMA and the (seed, step)-derived draws are all restored exactly)."""
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    common = [*TINY, "--max_train_steps", "30", "--checkpointing_steps", "1", "--checkpoints_total_limit", "3"]
    log = (tmp_path / "killed.log").open("w")  # a file, not a pipe: a full pipe would stall the child
    process = subprocess.Popen(
        [sys.executable, str(REPO / "train_ncsn.py"), *common, "--output_dir", str(killed)],
        env=subprocess_env(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while latest_checkpoint(killed) is None or int(latest_checkpoint(killed).name.split("-")[1]) < 3:
        assert process.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the run never reached checkpoint-3"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    log.close()
    assert not (killed / "model_index.json").exists(), "the run finished before it was killed"
    stopped_at = int(latest_checkpoint(killed).name.split("-")[1])
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
        (["--hub_model_id", "me/model"], "only used with --push_to_hub"),
        (["--resume_from_checkpoint", "latest", "--overwrite_output_dir"], "contradict each other"),
    ],
)
def test_contradictory_or_invalid_flags_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_ncsn.parse_args(argv)
    assert exit_info.value.code != 0
    assert message in capsys.readouterr().err


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
