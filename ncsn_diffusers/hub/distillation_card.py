"""The model card (README.md) of a distilled student, a diffusers `ConsistencyModelPipeline`, rendered from its record
`distillation.json` (the teacher, N, the calls and the quality measured)."""


def _quality_rows(quality: dict) -> str:
    if not quality:
        return "Not measured (`--quality_samples 0`, or data other than the digits).\n"
    rows = ["| calls | FD (digits evaluator) | rough samples | classes (min-max share) |", "|---|---:|---:|---|"]
    for label, q in quality.items():
        rows.append(
            f"| {label} | {q['frechet_distance']:.2f} | {100 * q['rough_fraction']:.1f}% | "
            f"{100 * q['class_share_min']:.1f}-{100 * q['class_share_max']:.1f}% |"
        )
    samples = next(iter(quality.values()))["num_samples"]
    return "\n".join(rows) + f"\n\n{samples} samples each, seed of the run; lower FD is better.\n"


def render_distillation_card(record: dict, repo_id: str, grid) -> str:
    """The README.md (Hub model card) of a distilled `ConsistencyModelPipeline`, from its `distillation.json`."""
    return f"""---
library_name: diffusers
pipeline_tag: unconditional-image-generation
tags: [consistency-models, consistency-distillation, ncsn, score-based, "diffusers:ConsistencyModelPipeline"]
---
# {repo_id.rstrip("/").split("/")[-1]}: a consistency model distilled from `{record["teacher_model"]}`

Consistency distillation (Song, Dhariwal, Chen & Sutskever 2023, Algorithm 2) of the NCSN score model
`{record["teacher_model"]}` into diffusers' own `ConsistencyModelPipeline`: a stock `UNet2DModel` and a
`CMStochasticIterativeScheduler`; diffusers alone loads it, and 1 or 2 U-Net calls give a sample in [-1, 1].

```python
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("{repo_id}")
images = pipe(batch_size=16, num_inference_steps=1).images  # 1 U-Net call
images = pipe(batch_size=16, num_inference_steps=None, timesteps={record["two_call_timesteps"]}).images  # 2 calls
```

The 2-call `timesteps` put the second call at t_{record["two_call_timesteps"][0]} of the N-level grid, chosen by
measurement on the default run's network (diffusers' own default, `num_inference_steps=2`, uses t_{record["num_scales"] // 2}).

## Distillation

| setting | value |
|---|---|
| teacher | `{record["teacher_model"]}` |
| N (Karras levels, rho = {record["rho"]}) | {record["num_scales"]} |
| sigma_min / sigma_max (the teacher's) | {record["sigma_min"]:.4g} / {record["sigma_max"]:.4g} |
| sigma_data (c_skip, c_out, c_in) | {record["sigma_data"]} |
| distance | {record["distance"]} |
| target EMA rate mu | {record["target_ema_rate"]} |
| student initialised from | {record["student_init"]} |
| steps x batch, learning rate | {record["max_train_steps"]} x {record["train_batch_size"]}, {record["learning_rate"]} |
| saved weights | {"the student's EMA (--use_ema)" if record["use_ema"] else "the student"} |
| CPU-minutes (whole run) | {record["cpu_minutes"]} on {record["device"]} |

Trained with `accelerate launch train_ncsn.py --objective consistency_distillation --teacher_model ...`
(ncsn-diffusers, docs/distillation.md). Final sample grid (1 call): `{grid.name}` in `samples/`.

## Quality

{_quality_rows(record["quality"])}"""
