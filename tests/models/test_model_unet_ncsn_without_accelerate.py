"""A saved NCSNUNet2DModel loads through its remote code with torch and diffusers alone, accelerate absent."""

import subprocess
import sys
import textwrap

import torch

from ncsn_diffusers import NCSNUNet2DModel

LOAD_WITHOUT_ACCELERATE = textwrap.dedent(
    """
    import sys
    sys.modules["accelerate"] = None  # importlib.util.find_spec("accelerate") is now None: not installed
    import torch
    from diffusers import AutoModel
    from diffusers.utils import is_accelerate_available
    assert not is_accelerate_available() and "ncsn_diffusers" not in sys.modules
    unet = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        print(unet(torch.randn(1, 1, 8, 8), 0.5).sample.sum().item())
    """
)


def test_automodel_loads_the_unet_without_accelerate(tmp_path):
    """Bug caught: diffusers refused the class for its `_keep_in_fp32_modules` without accelerate
    ("`low_cpu_mem_usage` cannot be False when `keep_in_fp32_modules` is True")."""
    torch.manual_seed(0)
    model = NCSNUNet2DModel.from_preset("tiny", sample_size=8).eval()
    model.save_pretrained(tmp_path)
    run = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_ACCELERATE, str(tmp_path)], capture_output=True, text=True, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr[-2000:]
    torch.manual_seed(0)
    with torch.no_grad():
        expected = model(torch.randn(1, 1, 8, 8), 0.5).sample.sum().item()
    assert abs(float(run.stdout.split()[-1]) - expected) < 1e-4 * max(1.0, abs(expected))
