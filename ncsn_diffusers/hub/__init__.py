"""Model cards and the Hugging Face Hub: every card the package writes, each rendered without network from explicit
arguments, and every upload.

- `pipeline_card`: the card of an `NCSNPipeline` (score or epsilon network), from `pipeline_card_template.md` and a
  [`PipelineCard`]; [`save_pipeline_with_card`] saves a pipeline with it.
- `distillation_card`: the card of a distilled student (diffusers' `ConsistencyModelPipeline`), from its record.
- `classifier_card`: the card of a `NoiseConditionalClassifier`, from its training table.
- `upload`: [`push_pipeline`] (a pipeline and its card) and [`push_folder`] (a finished run's allow-list).
- `endpoint`: the Hub's address and whether it answers.

A pipeline's own `save_pretrained` / `push_to_hub` are diffusers': they write no card of this package (diffusers'
`push_to_hub` uploads the repo's existing card, or its generic one).
"""

from .card_file import CARD_FILE, write_card
from .classifier_card import render_classifier_card
from .distillation_card import render_distillation_card
from .endpoint import hub_endpoint, hub_reachable
from .pipeline_card import (
    PipelineCard,
    render_model_card,
    render_pipeline_card,
    save_pipeline_with_card,
    write_model_card,
)
from .upload import SINGLE_MODEL_FILES, push_folder, push_pipeline, upload_patterns

__all__ = [
    "CARD_FILE",
    "SINGLE_MODEL_FILES",
    "PipelineCard",
    "hub_endpoint",
    "hub_reachable",
    "push_folder",
    "push_pipeline",
    "render_classifier_card",
    "render_distillation_card",
    "render_model_card",
    "render_pipeline_card",
    "save_pipeline_with_card",
    "upload_patterns",
    "write_card",
    "write_model_card",
]
