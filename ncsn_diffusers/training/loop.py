"""`train(config)`: the training run, from a resolved `TrainingConfig` to a saved `NCSNPipeline`."""

import json
import logging
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from .batch_order import BatchOrder, num_update_steps
from .checkpointing import (
    abandon_later_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    read_training_state,
    save_checkpoint,
)
from .config import TrainingConfig, public_args
from .data import TrainingBatches, complete_batch, training_set
from .export import ema_weights
from .finish import finish
from .json_log import JsonLog
from .log_dir import LOG_FILE, run_logging_dir
from .objectives import build_objective
from .run_dir import OutputDirClaim, resume_path
from .run_settings import compare_run_settings, must_match, run_settings
from .sampler import make_pipeline, sampling_sigma_max, save_sample_grid

logger = get_logger(__name__, log_level="INFO")


def train(config: TrainingConfig):
    """Trains the model `config` describes and saves its pipeline, model card and sample grid to `config.output_dir`.

    `config` is resolved first (see [`TrainingConfig.resolve`]), so a refused setting fails before anything is built
    or written. Under `accelerate launch --num_processes N` every process calls it.
    """
    config = config.resolve()
    claim = OutputDirClaim(config)
    threads = torch.get_num_threads()
    try:
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
        _train(config, claim)
    except BaseException:
        claim.failed()
        raise
    finally:
        claim.release()
        torch.set_num_threads(threads)


def _train(args, claim: OutputDirClaim):
    output_dir = Path(args.output_dir)
    logging_dir, _ = run_logging_dir(output_dir, args.logging_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(logging_dir)),
    )
    if args.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    if accelerator.is_main_process:
        claim.take()
    accelerator.wait_for_everyone()
    set_seed(args.seed)  # model initialisation; training draws use their own (seed, step) generators

    images = training_set(args)
    objective = build_objective(args, images)
    noise_scheduler = objective.noise_scheduler
    unet = objective.build_network(args, images)
    if objective.ve_ladder and args.sampler != "annealed_langevin":
        sampling_sigma_max(args, noise_scheduler.config)  # a bad --sampling_sigma_max fails before training
    if objective.ve_ladder:
        sigmas = noise_scheduler.sigmas.tolist()
        logger.info(
            f"Noise ladder ({args.noise_ladder}): L={len(sigmas)}, sigma_1={sigmas[0]:.4g} ... "
            f"sigma_L={sigmas[-1]:.4g}, epsilon={noise_scheduler.config.epsilon:.3g}"
        )

    order = BatchOrder(len(images), args.train_batch_size * accelerator.num_processes, args.seed)
    objective.use_batch_order(order, accelerator.num_processes)
    max_train_steps = args.max_train_steps or num_update_steps(
        args.num_epochs, order.batches_per_epoch, args.gradient_accumulation_steps
    )
    optimizer, lr_scheduler = build_optimizer(args, unet, max_train_steps, accelerator.num_processes)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    objective.prepare(accelerator, unet)
    ema = build_ema(args, accelerator.unwrap_model(unet)) if args.use_ema else None

    start_step = resume(args, accelerator, unet, optimizer, lr_scheduler, ema, max_train_steps, objective, images)
    if accelerator.is_main_process:
        (output_dir / "training_args.json").write_text(json.dumps(public_args(args), indent=2))
        accelerator.init_trackers("train_ncsn", config={k: v for k, v in public_args(args).items() if v is not None})
    json_log = JsonLog(logging_dir / LOG_FILE, start_step) if accelerator.is_main_process else None
    accum = args.gradient_accumulation_steps
    batches = TrainingBatches(
        images,
        order,
        start_step * accum,
        max_train_steps * accum,
        args,
        accelerator.device,
        accelerator.process_index,
        accelerator.num_processes,
    )

    streamed = "in memory" if batches.images is not None else f"streamed by {args.dataloader_num_workers} worker(s)"
    logger.info(
        f"{len(images)} training images {(args.channels, args.resolution, args.resolution)} {streamed}, objective "
        f"{args.objective}, "
        f"{accelerator.num_processes} process(es) x batch {args.train_batch_size} x accumulation "
        f"{args.gradient_accumulation_steps}, steps {start_step} -> {max_train_steps}"
    )
    start_time = time.time()
    last = run_training(
        args,
        accelerator,
        unet,
        optimizer,
        lr_scheduler,
        ema,
        noise_scheduler,
        batches,
        objective,
        order,
        start_step,
        max_train_steps,
        json_log,
    )
    train_time = time.time() - start_time
    del batches  # the loader's workers stop now, not at the end of the process

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        finish(objective, args, accelerator, unet, ema, images, max_train_steps, train_time, last)
    del unet, optimizer, lr_scheduler, ema  # the DDP reducer goes before the process group (end_distributed_run)
    end_distributed_run(accelerator)


def build_optimizer(args, unet, max_train_steps: int, num_processes: int):
    """AdamW over the network's parameters and its learning-rate schedule, for `max_train_steps` updates."""
    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
    )
    # accelerate steps a prepared lr scheduler once per process per update, hence the factor (diffusers' convention).
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * num_processes,
        num_training_steps=max_train_steps * num_processes,
    )
    return optimizer, lr_scheduler


def build_ema(args, model) -> EMAModel:
    """The exponential moving average of `model`'s weights (`--use_ema`), which the run saves."""
    return EMAModel(
        model.parameters(),
        decay=args.ema_max_decay,
        use_ema_warmup=args.ema_warmup,
        inv_gamma=args.ema_inv_gamma,
        power=args.ema_power,
        foreach=True,
        # Without warm-up, decay = ema_max_decay from the first step: the authors' EMAHelper (EMAModel would
        # otherwise copy the weights at its first step and ramp (1 + n) / (10 + n) after).
        **({} if args.ema_warmup else {"min_decay": args.ema_max_decay, "update_after_step": -1}),
    )


def resume(args, accelerator, unet, optimizer, lr_scheduler, ema, max_train_steps: int, objective, images=None) -> int:
    """Restores the state of `--resume_from_checkpoint` and returns its step (0 for a fresh run).

    The checkpoints past the resumed one belong to the run being abandoned: they are moved aside (see
    `abandon_later_checkpoints`), so that neither `latest` nor this run's pruning ever picks them.
    """
    if args.resume_from_checkpoint is None:
        return 0
    path = resume_path(args)
    if path is None:
        logger.info(f"No complete checkpoint in {args.output_dir}; starting a new training run.")
        return 0
    saved = read_training_state(path)
    current = run_settings(args, accelerator.num_processes, max_train_steps, objective.resume_must_match, images)
    warnings = compare_run_settings(
        path, saved.get("settings", {}), current, must_match(args, objective.resume_must_match)
    )
    if saved["step"] > max_train_steps:
        raise ValueError(
            f"{path} is at step {saved['step']}, past --max_train_steps {max_train_steps}; pass --max_train_steps "
            f">= {saved['step']}, or resume from an earlier checkpoint."
        )
    load_checkpoint(
        path, accelerator, model=unet, optimizer=optimizer, lr_scheduler=lr_scheduler, ema=ema, objective=objective
    )
    accelerator.step = saved["step"] * args.gradient_accumulation_steps  # where gradient accumulation stands
    if ema is not None:
        ema.to(accelerator.device)
    for warning in warnings:
        logger.warning(warning)
    if accelerator.is_main_process:
        for old, new in abandon_later_checkpoints(args.output_dir, saved["step"]):
            logger.warning(
                f"{old.name} is past the resumed step {saved['step']}: it belongs to the abandoned continuation of "
                f"this run and was moved to {new.name} (never resumed or pruned; delete it when you no longer need it)"
            )
    accelerator.wait_for_everyone()
    logger.info(f"Resumed from {path} at step {saved['step']}")
    return saved["step"]


def run_training(
    args,
    accelerator,
    unet,
    optimizer,
    lr_scheduler,
    ema,
    noise_scheduler,
    batches,
    objective,
    order,
    start_step,
    max_train_steps,
    json_log,
):
    """The training loop; returns the last logged losses. Raises `FloatingPointError` when the loss is not finite.

    Nothing leaves the device between logging steps: the running loss sums and the first non-finite step stay tensors.
    """
    device = accelerator.device
    accum = args.gradient_accumulation_steps
    progress = tqdm(
        range(start_step, max_train_steps),
        initial=start_step,
        total=max_train_steps,
        disable=not accelerator.is_local_main_process,
        desc="Steps",
    )
    sums = torch.zeros(2, device=device)  # running sums of (loss, other-form loss) since the last log
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    last, last_log_step, last_log_time = {}, start_step, time.time()
    unet.train()
    for step in range(start_step, max_train_steps):
        for k in range(accum):
            micro = step * accum + k
            clean, noise, levels = complete_batch(
                batches.clean(micro),
                order.global_batch_size,
                micro,
                args.seed,
                objective,
                args,
                accelerator.process_index,
            )
            with accelerator.accumulate(unet):
                loss, other = objective.losses(unet, clean, noise, levels, micro, accelerator.process_index)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            pair = torch.stack([loss.detach(), other.detach()])
            sums += pair / accum
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(pair).all(), step + 1, first_bad)
        if ema is not None:
            ema.step(accelerator.unwrap_model(unet).parameters())
        objective.after_step(accelerator.unwrap_model(unet))
        progress.update(1)
        done = step + 1
        is_checkpoint = done % args.checkpointing_steps == 0
        if done % args.logging_steps == 0 or done == max_train_steps or is_checkpoint:
            mean = accelerator.reduce(sums, reduction="mean") / (done - last_log_step)
            stop_on_non_finite_loss(args, accelerator.gather(first_bad[None]))
            loss_value, other_value = mean.tolist()
            now = time.time()
            last = {
                "step": done,
                "epoch": order.epoch_of(done * accum - 1),
                f"loss_{args.objective}": loss_value,
                objective.logged_as: other_value,
                "lr": lr_scheduler.get_last_lr()[0],
                "images_per_s": (done - last_log_step)
                * order.global_batch_size
                * accum
                / max(now - last_log_time, 1e-9),
            }
            accelerator.log({k: v for k, v in last.items() if k != "step"}, step=done)
            if json_log is not None:
                json_log.write(last)
            progress.set_postfix(loss=f"{loss_value:.4f}", lr=f"{last['lr']:.2e}")
            sums.zero_()
            last_log_step, last_log_time = done, now
        if is_checkpoint:
            state = {"epoch": last.get("epoch", 0), "settings": run_settings(
                args, accelerator.num_processes, max_train_steps, objective.resume_must_match, batches.dataset
            )}  # fmt: skip
            save_checkpoint(
                accelerator, args.output_dir, done, state, args.checkpoints_total_limit, model=unet,
                optimizer=optimizer, lr_scheduler=lr_scheduler, ema=ema, objective=objective,
            )  # fmt: skip
        if args.save_images_steps and done % args.save_images_steps == 0 and done < max_train_steps:
            save_grid_during_training(args, accelerator, unet, ema, noise_scheduler, done)
    progress.close()
    return last


def stop_on_non_finite_loss(args, first_bad: torch.Tensor):
    """Raises `FloatingPointError` naming the fix when any process saw a non-finite loss (`first_bad`: the first
    such step of each process, -1 for none)."""
    if not (first_bad >= 0).any():
        return
    bad = int(first_bad[first_bad >= 0].min())
    good = latest_checkpoint(args.output_dir)
    raise FloatingPointError(
        f"The loss became NaN or infinite at step {bad}; the run stopped. "
        + (
            f"The last good checkpoint in {args.output_dir} is {good}: resume from it "
            f"(--resume_from_checkpoint {good}) with a lower --learning_rate or --max_grad_norm."
            if good is not None
            else f"No checkpoint was written yet (the first is due at step {args.checkpointing_steps}): "
            "start again with --overwrite_output_dir and a lower --learning_rate or --max_grad_norm."
        )
    )


def save_grid_during_training(args, accelerator, unet, ema, noise_scheduler, done: int):
    """The sample grid of step `done` (`--save_images_steps`), drawn with the EMA weights by the main process."""
    if accelerator.is_main_process:
        with ema_weights(accelerator.unwrap_model(unet), ema):
            pipeline = make_pipeline(accelerator.unwrap_model(unet), noise_scheduler, args)
            save_sample_grid(
                pipeline,
                Path(args.output_dir) / "samples" / f"step_{done:06d}.png",
                args.num_sample_images,
                args.seed,
                accelerator.device,
                args.sample_grid_steps,
            )
    unet.train()
    accelerator.wait_for_everyone()


def end_distributed_run(accelerator):
    """Ends a run explicitly, so that no process hangs at exit: a last barrier, accelerate's references to the
    prepared (DDP-wrapped) model and optimizer dropped and collected, then the trackers closed and the process group
    destroyed (`end_training`). Left to interpreter exit, DDP's reducer may be freed after the gloo process group,
    whose destructor then blocks forever. The caller drops its own references first.
    """
    import gc

    accelerator.wait_for_everyone()
    accelerator.free_memory()
    gc.collect()  # the reducer goes now, while the process group is alive
    accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
