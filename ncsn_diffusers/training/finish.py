"""The end of every run: the EMA weights become the model, the objective saves it with its model card, and
`--push_to_hub` uploads the folder's allow-list."""

from pathlib import Path

from accelerate.logging import get_logger

from ..hub.upload import push_folder

logger = get_logger(__name__, log_level="INFO")


def finish(objective, args, accelerator, network, ema, images, max_train_steps: int, train_time: float, last: dict):
    """Loads the EMA weights into the trained network for good, has `objective.save` write it to --output_dir (what
    it saves and which card are the objective's), then pushes the folder to the Hub with --push_to_hub."""
    model = accelerator.unwrap_model(network)
    if ema is not None:
        ema.copy_to(model.parameters())  # training is over: the EMA weights are the model
    model.eval()
    repo_id = args.hub_model_id or (Path(args.output_dir).resolve().name if args.push_to_hub else None)
    objective.save(args, accelerator, model, images, max_train_steps, train_time, last, repo_id)
    if args.push_to_hub:
        # only what this run wrote: a folder overwritten by another objective may still hold an older model's files
        pushed = push_folder(
            args.output_dir, repo_id, objective.hub_files, private=args.hub_private_repo, token=args.hub_token
        )
        logger.info(f"Pushed {args.output_dir} to {pushed}")
