"""Where the examples write by default: never into the repository's docs/, whose figures are the documented ones.

Bug caught: `examples/controllable_digits.py`, `examples/inpaint_digits.py` and `examples/paper_figures.py` wrote
their figures into docs/ when run as their docstrings show, overwriting the figures the docs describe.
"""

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# the examples that write figures (the others write into a required --output_dir or print)
EXAMPLES = [REPO / "examples" / f"{name}.py" for name in ("controllable_digits", "inpaint_digits", "paper_figures")]


def load_example(path: Path):
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_that_saves_a_figure_by_default_is_checked():
    saving = {p.stem for p in (REPO / "examples").glob("*.py") if ".savefig(" in p.read_text()}
    assert saving <= {p.stem for p in EXAMPLES} | {"compare_samplers"}  # its figure only where --plot says


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_default_outputs_are_outside_docs(path, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    args = vars(load_example(path).parse_args([]))
    docs = (tmp_path / "docs").resolve()
    for name, value in args.items():
        if isinstance(value, str) and value:
            target = (tmp_path / value).resolve()
            assert docs != target and docs not in target.parents, f"{path.name}: --{name} defaults to {value!r}"
