"""`--objective consistency_distillation` in the training loop: the objective that owns a teacher and a target.

The loop trains one network, the student f_theta (a stock `UNet2DModel`); this objective holds the two others:
- the teacher s_phi, frozen and without gradients, whose Heun step gives x_hat_{n+1};
- the target f_theta^-, the EMA of the student at rate mu (`--target_ema_rate`), updated after every optimizer step
  by `after_step` and saved in each checkpoint by `state_dict` (safetensors), so a killed run resumes bit-exactly.
The target is a training device only, as in the paper's code: what is saved and sampled is the student's own
`--use_ema` average (an EMA of theta at the loop's slower, warmed-up decay), or the student itself with `--no-use_ema`.
"""

import copy
import hashlib
import json
import time
from pathlib import Path

import torch
from accelerate.logging import get_logger

from ... import NCSNPipeline, NCSNUNet2DModel
from ...hub.card_file import write_card
from ...hub.distillation_card import render_distillation_card
from ...schedulers.noise_ladders import karras_sigmas
from ..consistency_distillation import (
    consistency_distillation_loss,
    consistency_pipeline,
    consistency_scheduler,
    student_from_teacher,
    teacher_denoiser,
    update_target,
)
from ..data import trained_on_digits
from ..distillation_config import (
    OBJECTIVE,
    read_teacher,
    refuse_distillation_flags,
    resolve_distillation,
    teacher_data_range,
)
from ..distillation_record import (
    DISTILLATION_RECORD,
    measure_quality,
    public_model_name,
    quality_summary,
    two_call_timesteps,
)
from ..networks import build_ddpm_unet
from ..sampler import save_sample_grid
from .base import Objective

logger = get_logger(__name__, log_level="INFO")


class ConsistencyDistillation(Objective):
    """Consistency distillation (Song et al. 2023, Algorithm 2) of `--teacher_model` on the training images.

    A level n is drawn uniformly from {0, ..., N-2} of the Karras grid t_0 = sigma_max > ... > t_{N-1} = sigma_min
    (the teacher scheduler's range, doubled for a [0, 1] teacher), and the loss is
    d(f_theta(x + t_n z, t_n), stopgrad f_theta^-(x_hat_{n+1}, t_{n+1})). The teacher is read by `build_network`
    and moved to the device by `prepare`.
    """

    name, logged_as = OBJECTIVE, "loss_l2"
    # the teacher, the grid and the target's rate shape what the checkpoint's state means
    resume_must_match = ("teacher_model", "num_scales", "target_ema_rate", "distance", "sigma_data", "student_init")

    @classmethod
    def resolve_settings(cls, config, explicit):
        resolve_distillation(config, explicit)

    @classmethod
    def refuse_settings(cls, config, explicit):
        refuse_distillation_flags(config, explicit)

    def __init__(self, config, noise_scheduler):
        super().__init__(config, noise_scheduler)
        self.teacher = self.target = self.denoiser = self.scheduler = self._sigmas = None

    def sample_levels(self, batch_size, generator, device):
        return torch.randint(0, self.config.num_scales - 1, (batch_size,), generator=generator, device=device)

    def build_network(self, args, images):
        """Loads the teacher (frozen) and returns the student: a `UNet2DModel` with the teacher's blocks and weights
        (`--student_init teacher`), or `--model_preset`'s, freshly initialised (`random`)."""
        config = self.config
        folder = read_teacher(config.teacher_model)["folder"]
        teacher_pipe = NCSNPipeline.from_pretrained(folder)
        self.teacher = teacher_pipe.unet.requires_grad_(False).eval()
        self.teacher_sha256 = weights_sha256(self.teacher)
        data_range = teacher_data_range(json.loads(teacher_pipe.scheduler.to_json_string()))
        self.denoiser = teacher_denoiser(self.teacher, data_range)
        scale = 2.0 if data_range == (0.0, 1.0) else 1.0  # the teacher's sigmas, in the student's [-1, 1]
        ladder = teacher_pipe.scheduler.config
        self.scheduler = consistency_scheduler(
            scale * ladder.sigma_min, scale * ladder.sigma_max, config.sigma_data, config.num_scales
        )
        if isinstance(self.teacher, NCSNUNet2DModel):  # the same blocks: copied, or the same shapes afresh
            return student_from_teacher(self.teacher, init_from_teacher=config.student_init == "teacher")
        return build_ddpm_unet(config)  # --model_preset's UNet2DModel (its positional embedding takes 250 log sigma)

    def prepare(self, accelerator, unet):
        """The teacher on the device; the target theta^- starts as a copy of the student (theta^- = theta)."""
        self.teacher.to(accelerator.device)
        student = accelerator.unwrap_model(unet)
        self.target = copy.deepcopy(student).requires_grad_(False).train(student.training)  # as the paper's code

    def sigmas(self, device) -> torch.Tensor:
        """The Karras grid of the scheduler, (N,) descending, on `device`, computed once."""
        if self._sigmas is None or self._sigmas.device != torch.device(device):
            c = self.scheduler.config
            self._sigmas = karras_sigmas(c.sigma_max, c.sigma_min, c.num_train_timesteps, c.rho).float().to(device)
        return self._sigmas

    def losses(self, unet, clean, noise, levels, micro_step, process_index=0):
        sigmas = self.sigmas(clean.device)
        distance = self.config.distance
        return consistency_distillation_loss(
            unet, self.target, self.denoiser, self.scheduler, clean, noise, levels, sigmas, distance
        )

    def after_step(self, unet):
        update_target(self.target, unet, self.config.target_ema_rate)

    def state_dict(self) -> dict:
        return {
            "target": {k: v.detach() for k, v in self.target.state_dict().items()},
            "teacher_sha256": self.teacher_sha256,
        }

    def load_state_dict(self, state: dict):
        if "target" not in state:
            raise ValueError(
                "The checkpoint holds no target network (theta^-) of consistency distillation; resume it with the "
                "--objective it was trained with."
            )
        saved = state.get("teacher_sha256")  # absent from checkpoints of earlier releases
        if saved is not None and saved != self.teacher_sha256:
            raise ValueError(
                f"--teacher_model {self.config.teacher_model} changed since this checkpoint was saved (its U-Net "
                "weights differ: retrained or replaced in place), so the student would go on learning another ODE. "
                "Resume with the teacher it was trained with, or start a fresh run in another --output_dir."
            )
        self.target.load_state_dict(state["target"])

    def save(self, args, accelerator, student, images, max_train_steps, train_time, last, repo_id):
        """Saves the student as diffusers' `ConsistencyModelPipeline`, with a 1-call sample grid, the FD measured at 1
        and 2 calls (digits only, `--quality_samples`), `distillation.json` and the model card."""
        c = self.scheduler.config
        pipeline = consistency_pipeline(student, c.sigma_min, c.sigma_max, c.sigma_data, c.num_train_timesteps, c.rho)
        pipeline.set_progress_bar_config(disable=True)
        output_dir = Path(args.output_dir)
        grid = output_dir / "samples" / f"step_{max_train_steps:06d}.png"
        save_sample_grid(pipeline, grid, args.num_sample_images, args.seed, accelerator.device)
        quality = measure_quality(pipeline, args.quality_samples, args.seed) if trained_on_digits(args) else {}
        logger.info(quality_summary(quality))
        record = {
            "teacher_model": public_model_name(args.teacher_model),
            "num_scales": c.num_train_timesteps,
            "sigma_min": c.sigma_min,
            "sigma_max": c.sigma_max,
            "sigma_data": c.sigma_data,
            "rho": c.rho,
            "two_call_timesteps": two_call_timesteps(c.num_train_timesteps),
            "target_ema_rate": args.target_ema_rate,
            "distance": args.distance,
            "student_init": args.student_init,
            "max_train_steps": max_train_steps,
            "train_batch_size": args.train_batch_size,
            "learning_rate": args.learning_rate,
            "use_ema": args.use_ema,
            "final_loss": last.get(f"loss_{OBJECTIVE}"),
            "train_time_s": round(train_time, 1),
            "cpu_minutes": round(time.process_time() / 60, 2),
            "device": str(accelerator.device),
            "quality": quality,
        }
        pipeline.save_pretrained(output_dir)
        (output_dir / DISTILLATION_RECORD).write_text(json.dumps(record, indent=2))
        card_name = repo_id or output_dir.resolve().name  # a local folder by its name only, never its path
        write_card(output_dir, render_distillation_card(record, card_name, grid))
        logger.info(f"Saved the ConsistencyModelPipeline to {output_dir} ({record['cpu_minutes']} CPU-minutes)")


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state dict (names, dtypes, shapes and values, in name order): which teacher a run used."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
