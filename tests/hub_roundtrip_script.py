"""Push to and load from a local Hub stand-in with the real `huggingface_hub` and `diffusers` clients.

Run as `python tests/hub_roundtrip_script.py [check_name ...]` (tests/pipelines/test_hub_stand_in.py runs it once). It starts
`LocalHub` on 127.0.0.1, points `HF_ENDPOINT` at it and only then imports `huggingface_hub` / `diffusers`, because
the client reads its endpoint at import. Each check prints PASS or FAIL; the exit status is 1 if any failed.

To add a check, write a function taking the `Context` and decorate it with `@check`; checks run in the order they
are defined, each on repos of its own (`ctx.repo_id(name)`).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(Path(__file__).resolve().parent)]

from hub_stand_in import LocalHub  # noqa: E402


@dataclass
class Context:
    hub: LocalHub
    workdir: Path  # scratch space, removed at exit

    @property
    def user(self) -> str:
        return self.hub.user

    def repo_id(self, name: str) -> str:
        return f"{self.hub.user}/{name}"


CHECKS: list[Callable[[Context], None]] = []


def check(fn: Callable[[Context], None]) -> Callable[[Context], None]:
    CHECKS.append(fn)
    return fn


def _tiny_ddpm_pipeline():
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler
    from tiny_models import tiny_ddpm_unet

    unet = tiny_ddpm_unet()
    with torch.no_grad():  # move off the default init, so loading the wrong weights cannot go unnoticed
        for parameter in unet.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=50))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _ddpm_samples(pipe):
    import torch

    generator = torch.Generator().manual_seed(0)
    return pipe(batch_size=2, generator=generator, num_inference_steps=3, output_type="np").images


def _public(config) -> dict:
    """A config without the bookkeeping keys (`_name_or_path`, `_use_default_values`, ...) that loading adds."""
    return {key: value for key, value in config.items() if not key.startswith("_")}


@check
def folder_roundtrip(ctx: Context) -> None:
    """create_repo + upload_folder + snapshot_download give back the same bytes; errors map to the Hub's."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    api = HfApi()
    assert api.whoami()["name"] == ctx.user
    repo_id = api.create_repo("roundtrip", private=True).repo_id
    assert repo_id == ctx.repo_id("roundtrip"), repo_id

    folder = ctx.workdir / "upload"
    files = {
        "config.json": b'{"a": 1}\n',
        "weights/model.safetensors": os.urandom(200_000),  # binary, the kind the Hub would send to LFS
        "weights/empty.bin": b"",
    }
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="upload")

    info = api.model_info(repo_id, files_metadata=True)
    assert info.sha == commit.oid and info.private
    assert {s.rfilename: s.size for s in info.siblings} == {
        ".gitattributes": info.siblings[0].size,
        **{name: len(content) for name, content in files.items()},
    }
    assert set(api.list_repo_files(repo_id)) == {".gitattributes", *files}

    snapshot = Path(snapshot_download(repo_id))
    assert snapshot.name == commit.oid
    for name, content in files.items():
        assert (snapshot / name).read_bytes() == content, name

    try:
        hf_hub_download(repo_id, "missing.txt")
        raise AssertionError("a missing file downloaded")
    except EntryNotFoundError:
        pass
    try:
        api.model_info(repo_id, token=False)
        raise AssertionError("a private repo answered without a token")
    except RepositoryNotFoundError:
        pass


@check
def ddpm_pipeline_push_and_load(ctx: Context) -> None:
    """A stock DDPMPipeline pushed with push_to_hub samples identically after DDPMPipeline.from_pretrained."""
    import numpy as np
    import torch
    from diffusers import DDPMPipeline
    from huggingface_hub import HfApi

    pipe = _tiny_ddpm_pipeline()
    pipe.push_to_hub("tiny-ddpm")  # no namespace: the Hub puts it under the token's user
    repo_id = ctx.repo_id("tiny-ddpm")
    pushed = set(HfApi().list_repo_files(repo_id))
    expected = {
        "model_index.json",
        "README.md",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    }
    assert expected <= pushed, pushed

    downloads_before = sum(1 for method, path in ctx.hub.requests if method == "GET" and "/resolve/" in path)
    loaded = DDPMPipeline.from_pretrained(repo_id)
    loaded.set_progress_bar_config(disable=True)
    downloads = sum(1 for method, path in ctx.hub.requests if method == "GET" and "/resolve/" in path)
    assert downloads - downloads_before >= 4, "from_pretrained did not download from the local hub"

    for name, tensor in pipe.unet.state_dict().items():
        assert torch.equal(tensor, loaded.unet.state_dict()[name]), name
    assert _public(loaded.scheduler.config) == _public(pipe.scheduler.config)
    assert np.array_equal(_ddpm_samples(pipe), _ddpm_samples(loaded))


@check
def ncsn_pipeline_push_and_load(ctx: Context) -> None:
    """hub.push_pipeline, then NCSNPipeline.from_pretrained(repo_id): identical samples and our model card."""
    import torch
    from huggingface_hub import ModelCard, hf_hub_download

    from ncsn_diffusers import AnnealedLangevinScheduler, NCSNPipeline, NCSNUNet2DModel
    from ncsn_diffusers.hub import PipelineCard, push_pipeline

    torch.manual_seed(0)
    unet = NCSNUNet2DModel.from_preset("tiny", sample_size=8)
    scheduler = AnnealedLangevinScheduler(sigma_max=2.0, sigma_min=0.02, epsilon=8e-5, data_range=(-1.0, 1.0))
    pipe = NCSNPipeline(unet=unet, scheduler=scheduler)
    push_pipeline(pipe, "tiny-ncsn", PipelineCard(results={"frechet_distance": 3.5}))
    repo_id = ctx.repo_id("tiny-ncsn")

    card = ModelCard.load(hf_hub_download(repo_id, "README.md"))
    assert card.data.library_name == "diffusers" and "diffusers:NCSNPipeline" in card.data.tags, card.data
    assert repo_id in card.text and "3.5" in card.text

    loaded = NCSNPipeline.from_pretrained(repo_id)
    for pipeline in (pipe, loaded):
        pipeline.set_progress_bar_config(disable=True)
    kwargs = {"batch_size": 2, "num_inference_steps": 8, "output_type": "pt"}
    a = pipe(generator=torch.Generator().manual_seed(0), **kwargs).images
    b = loaded(generator=torch.Generator().manual_seed(0), **kwargs).images
    assert torch.equal(a, b)


@check
def score_model_with_diffusers_only(ctx: Context) -> None:
    """The card's diffusers-only code, run against the pushed repo with ncsn_diffusers unimportable, samples what
    NCSNPipeline samples: AutoModel loads unet/unet_ncsn.py as remote code, the card's loop runs Algorithm 1."""
    import re

    import torch
    from huggingface_hub import hf_hub_download

    from ncsn_diffusers import AnnealedLangevinScheduler, NCSNPipeline, NCSNUNet2DModel
    from ncsn_diffusers.hub import push_pipeline

    torch.manual_seed(0)
    unet = NCSNUNet2DModel.from_preset("tiny", sample_size=8)
    scheduler = AnnealedLangevinScheduler(
        sigma_max=2.0, sigma_min=0.1, num_noise_levels=3, steps_per_level=2, epsilon=1e-3, final_denoise=True,
        data_range=(-1.0, 1.0),
    )  # fmt: skip
    pipe = NCSNPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    push_pipeline(pipe, "tiny-ncsn-diffusers-only")
    repo_id = ctx.repo_id("tiny-ncsn-diffusers-only")
    expected = pipe(batch_size=4, generator=torch.Generator().manual_seed(0), output_type="pt").images

    card = open(hf_hub_download(repo_id, "README.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", card, re.DOTALL)
    code = [b for b in blocks if "def annealed_langevin" in b] + [
        b for b in blocks if "AutoModel.from_pretrained" in b
    ]
    assert len(code) == 2 and not any("ncsn_diffusers" in block for block in code), code

    hidden = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "ncsn_diffusers"}
    sys.modules.update(dict.fromkeys(hidden))  # `import ncsn_diffusers` fails from here on, as without the package
    try:
        namespace = {}
        for block in code:
            exec(compile(block, "model_card_snippet", "exec"), namespace)
    finally:
        sys.modules.update(hidden)

    assert type(namespace["unet"]).__module__.startswith("diffusers_modules."), type(namespace["unet"])
    downloaded = {path.split("/resolve/", 1)[1].split("/", 1)[1] for method, path in ctx.hub.requests if
                  method == "GET" and f"/{repo_id}/resolve/" in path}  # fmt: skip
    assert "unet/unet_ncsn.py" in downloaded, downloaded
    images = (namespace["x"] + 1) / 2  # data_range (-1, 1) -> [0, 1], as the pipeline maps its output
    assert images.shape == expected.shape == (4, 1, 8, 8)
    # The same draws from the same generator; only float rounding differs (python floats vs float32 tensors).
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)


@check
def converted_official_checkpoints_push_and_load(ctx: Context) -> None:
    """Fixtures converted from the authors' format, pushed and loaded back: their official forward pass and samples."""
    import torch
    from safetensors.torch import load_file

    from ncsn_diffusers import NCSNPipeline

    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import convert_ncsn_original_to_diffusers as convert_script

    for name in ("ncsn_v1_cifar10", "ncsnv2_cifar10"):
        fixture = REPO_ROOT / "tests" / "fixtures" / name
        pipe = convert_script.convert(fixture / "checkpoint.pth", fixture / "config.yml", ctx.workdir / name)
        pipe.push_to_hub(f"converted-{name}")
        loaded = NCSNPipeline.from_pretrained(ctx.repo_id(f"converted-{name}"))
        assert type(loaded.unet) is type(pipe.unet)
        forward = load_file(fixture / "forward.safetensors")
        with torch.no_grad():
            output = loaded.unet(forward["inputs"], loaded.scheduler.sigmas[forward["levels"]]).sample
        # to 1e-5 of the output's scale: float32 rounding differs by CPU (see test_convert_ncsn_original.py)
        scale = forward["outputs"].abs().max().item()
        torch.testing.assert_close(output, forward["outputs"], rtol=1e-5, atol=1e-5 * scale)
        kwargs = {"batch_size": 1, "steps_per_level": 1, "output_type": "pt"}
        for pipeline in (pipe, loaded):
            pipeline.set_progress_bar_config(disable=True)
        a = pipe(generator=torch.Generator().manual_seed(0), **kwargs).images
        assert torch.equal(a, loaded(generator=torch.Generator().manual_seed(0), **kwargs).images)


@check
def swapped_ddpm_pipeline_push_and_load(ctx: Context) -> None:
    """A DDPMPipeline whose scheduler was swapped to AnnealedLangevinScheduler survives push and load."""
    import numpy as np
    from diffusers import DDPMPipeline, UNet2DModel

    from ncsn_diffusers import AnnealedLangevinScheduler, NCSNPipeline, resolve_pipeline_folder

    pipe = _tiny_ddpm_pipeline()
    pipe.unet.save_pretrained(ctx.workdir / "unet")  # a reloaded U-Net, so that both sides run the same kernels
    pipe.unet = UNet2DModel.from_pretrained(ctx.workdir / "unet")
    pipe.scheduler = AnnealedLangevinScheduler.from_config(pipe.scheduler.config)
    pipe.push_to_hub("tiny-ddpm-swapped")
    repo_id = ctx.repo_id("tiny-ddpm-swapped")

    # Stock DDPMPipeline.from_pretrained(repo_id) reads the ncsn_diffusers entry as remote code; the snapshot does not.
    loaded = DDPMPipeline.from_pretrained(resolve_pipeline_folder(repo_id))
    assert isinstance(loaded.scheduler, AnnealedLangevinScheduler) and loaded.scheduler.config.noise_space == "vp"
    assert np.array_equal(_ddpm_samples(pipe), _ddpm_samples(loaded))
    as_ncsn = NCSNPipeline.from_pretrained(repo_id)
    assert as_ncsn.scheduler.config.prediction_type == "epsilon"


@check
def generic_entry_point_loads_from_the_hub(ctx: Context) -> None:
    """With ncsn_diffusers imported, diffusers' own DiffusionPipeline.from_pretrained(repo_id) downloads and loads a
    pushed NCSNPipeline (an fp16-labelled variant here) and DDPMPipeline.from_pretrained a swapped DDPM pipeline."""
    import torch
    from diffusers import DDPMPipeline, DiffusionPipeline

    from ncsn_diffusers import AnnealedLangevinScheduler, NCSNPipeline, NCSNUNet2DModel

    torch.manual_seed(0)
    scheduler = AnnealedLangevinScheduler(sigma_max=2.0, sigma_min=0.02, epsilon=8e-5, data_range=(-1.0, 1.0))
    pipe = NCSNPipeline(unet=NCSNUNet2DModel.from_preset("tiny", sample_size=8), scheduler=scheduler)
    pipe.push_to_hub("tiny-ncsn-generic", variant="fp16")
    loaded = DiffusionPipeline.from_pretrained(ctx.repo_id("tiny-ncsn-generic"), variant="fp16")
    assert type(loaded) is NCSNPipeline, type(loaded)
    kwargs = {"batch_size": 2, "num_inference_steps": 6, "output_type": "pt"}
    a, b = (p(generator=torch.Generator().manual_seed(0), **kwargs).images for p in (pipe, loaded))
    assert torch.equal(a, b)

    # A pipeline saved before the schedulers/ subpackage names the old module path.
    import json

    from huggingface_hub import HfApi

    folder = ctx.workdir / "old_path"
    pipe.save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["scheduler"] = ["ncsn_diffusers.scheduling_annealed_langevin", "AnnealedLangevinScheduler"]
    (folder / "model_index.json").write_text(json.dumps(index))
    repo_id = HfApi().create_repo("tiny-ncsn-old-path").repo_id
    HfApi().upload_folder(repo_id=repo_id, folder_path=folder)
    assert torch.equal(DiffusionPipeline.from_pretrained(repo_id).unet.conv_in.weight, pipe.unet.conv_in.weight)

    ddpm = _tiny_ddpm_pipeline()
    ddpm.scheduler = AnnealedLangevinScheduler.from_config(ddpm.scheduler.config)
    ddpm.push_to_hub("tiny-ddpm-swapped-generic")
    loaded = DDPMPipeline.from_pretrained(ctx.repo_id("tiny-ddpm-swapped-generic"))
    assert isinstance(loaded.scheduler, AnnealedLangevinScheduler) and loaded.scheduler.config.noise_space == "vp"
    for name, tensor in ddpm.unet.state_dict().items():
        assert torch.equal(tensor, loaded.unet.state_dict()[name]), name


def main(argv: list[str]) -> int:
    if "huggingface_hub" in sys.modules:
        raise RuntimeError("huggingface_hub was imported before HF_ENDPOINT was set; it would talk to the real Hub")
    unknown = set(argv) - {fn.__name__ for fn in CHECKS}
    if unknown:
        raise ValueError(f"Unknown check(s) {sorted(unknown)}; choose among {[fn.__name__ for fn in CHECKS]}")
    selected = [fn for fn in CHECKS if not argv or fn.__name__ in argv]

    with tempfile.TemporaryDirectory(prefix="local-hub-") as tmp, LocalHub(Path(tmp) / "hub") as hub:
        home = Path(tmp) / "hf_home"
        os.environ.update(
            HF_ENDPOINT=hub.endpoint,
            HF_HUB_DISABLE_XET="1",
            HF_HUB_OFFLINE="0",
            HF_TOKEN=hub.token,
            HF_HOME=str(home),
            HF_HUB_CACHE=str(home / "hub"),
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
        )
        import diffusers
        import torch

        torch.set_num_threads(1)
        diffusers.utils.logging.disable_progress_bar()

        failed = []
        for fn in selected:
            workdir = Path(tmp) / "work" / fn.__name__
            workdir.mkdir(parents=True)
            start = time.perf_counter()
            try:
                fn(Context(hub=hub, workdir=workdir))
                print(f"PASS {fn.__name__} ({time.perf_counter() - start:.1f} s)", flush=True)
            except Exception:
                traceback.print_exc()
                print(f"FAIL {fn.__name__}", flush=True)
                failed.append(fn.__name__)
    print(f"{len(selected) - len(failed)}/{len(selected)} checks passed" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
