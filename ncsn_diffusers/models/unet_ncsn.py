"""A U-Net score network s_theta(x, sigma) conditioned on the noise level sigma itself.

The network embeds c_noise = log(sigma) (Gaussian Fourier features as in NCSN++, or DDPM's sinusoidal features) and,
by default, returns its raw output divided by sigma: s_theta(x, sigma) = F_theta(x, log sigma) / sigma (NCSNv2,
Technique 3; NCSN++ does the same). The score of a sigma-perturbed distribution scales like 1/sigma, so F_theta has
order one at every noise level.

The blocks, embeddings and their wiring are diffusers' own (`get_down_block`, `UNetMidBlock2D`, `get_up_block`,
`GaussianFourierProjection`, `Timesteps`, `TimestepEmbedding`). We do not subclass `UNet2DModel`, although with
`time_embedding_type="fourier"` it embeds log(timestep) and divides by it, because its `forward` turns a python float
timestep into a `long` tensor (sigma=0.5 becomes 0 and log(0) = -inf), its positional embedding takes the raw
timestep rather than log sigma, its division cannot be switched off, and its config would carry DDPM-only keys
(`num_train_timesteps`, class embeddings, ...) that mean nothing for a score network.

This file imports nothing but torch and diffusers: `save_pretrained` puts a copy of it next to the weights, and
`auto_map` in config.json names it, so that a user without ncsn-diffusers can load a saved or pushed model with
`diffusers.AutoModel.from_pretrained(..., trust_remote_code=True)`.
"""

import os
import shutil

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import GaussianFourierProjection, TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block, get_up_block
from diffusers.utils import is_accelerate_available

# Blocks whose forward is (hidden_states, temb) -> (hidden_states, res_samples) going down and
# (hidden_states, res_hidden_states_tuple, temb) -> hidden_states going up.
DOWN_BLOCK_TYPES = ("DownBlock2D", "AttnDownBlock2D", "ResnetDownsampleBlock2D")
UP_BLOCK_TYPES = ("UpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D")
SIGMA_EMBEDDING_TYPES = ("fourier", "positional")

PRESETS = {
    # Tests and CPU smoke runs: 1x16x16, two resolutions, no attention.
    "tiny": {
        "sample_size": 16,
        "in_channels": 1,
        "block_out_channels": (16, 32),
        "down_block_types": ("DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D"),
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "add_attention": False,
    },
    # sklearn's 8x8 digits resized to 16x16 grayscale, trained on 2 CPU cores: 16 channels at full resolution (where
    # nearly all the compute is), attention only at 4x4.
    "digits": {
        "sample_size": 16,
        "in_channels": 1,
        "block_out_channels": (16, 32, 64),
        "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        "layers_per_block": 1,
        "norm_num_groups": 8,
    },
    # CIFAR-10 at the scale of DDPM / NCSNv2 (~36M parameters): ch=128, ch_mult=(1, 2, 2, 2), attention at 16x16.
    "cifar10": {
        "sample_size": 32,
        "in_channels": 3,
        "block_out_channels": (128, 256, 256, 256),
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "layers_per_block": 2,
        "dropout": 0.1,
        "attention_head_dim": None,
    },
}


class Float32GaussianFourierProjection(GaussianFourierProjection):
    """diffusers' Gaussian Fourier features whose frequencies w stay float32 under `model.to(dtype)`.

    With `fourier_scale=16` the phases 2 * pi * w * log(sigma) reach hundreds of radians, so bfloat16's relative rounding
    of w (2**-9) would shift them by up to radians and scramble the embedding a float32-trained model relies on.
    """

    def _apply(self, fn, recurse=True):
        frequencies = self.weight.data
        super()._apply(fn, recurse)
        self.weight.data = frequencies.to(self.weight.device)  # follow the device, keep the dtype
        return self


class NCSNUNet2DModel(ModelMixin, ConfigMixin):
    r"""
    A U-Net that estimates the score s_theta(x, sigma) = grad_x log q_sigma(x) of data perturbed by N(0, sigma**2 I).

    Parameters:
        sample_size (`int`, *optional*, defaults to `None`):
            Height and width of the (square) samples the model is trained on; read by pipelines to draw x_0. Any
            size divisible by `2 ** (len(block_out_channels) - 1)` runs.
        in_channels (`int`, defaults to 3):
            Number of channels of the sample; the score has the same shape as the sample.
        block_out_channels (`tuple[int]`, defaults to `(128, 256, 256, 256)`):
            Channels of each resolution; the sample is halved `len(block_out_channels) - 1` times.
        down_block_types (`tuple[str]`, defaults to `("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D")`):
            Down blocks, one per resolution, from `"DownBlock2D"`, `"AttnDownBlock2D"`, `"ResnetDownsampleBlock2D"`.
        up_block_types (`tuple[str]`, defaults to `("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")`):
            Up blocks, lowest resolution first, from `"UpBlock2D"`, `"AttnUpBlock2D"`, `"ResnetUpsampleBlock2D"`.
        layers_per_block (`int`, defaults to 2):
            ResNet blocks per down block (up blocks get one more, for the skip connections).
        add_attention (`bool`, defaults to `True`):
            Whether the middle block has a self-attention layer.
        attention_head_dim (`int`, *optional*, defaults to `None`):
            Channels per attention head; `None` gives one head over all channels, as in DDPM.
        norm_num_groups (`int`, defaults to 32):
            Groups of every GroupNorm; must divide every entry of `block_out_channels`.
        norm_eps (`float`, defaults to 1e-5):
            Epsilon of every GroupNorm.
        act_fn (`str`, defaults to `"silu"`):
            Activation function of the ResNet blocks.
        dropout (`float`, defaults to 0.0):
            Dropout probability inside the ResNet blocks (DDPM and NCSN++ use 0.1 on CIFAR-10).
        resnet_time_scale_shift (`str`, defaults to `"default"`):
            How the sigma embedding enters each ResNet block: `"default"` adds it, `"scale_shift"` modulates the
            GroupNorm output (FiLM, as NCSNv1's conditional normalisation does with its per-level embedding).
        sigma_embedding_type (`str`, defaults to `"fourier"`):
            Features of c_noise = log(sigma): `"fourier"` (random Gaussian Fourier features, NCSN++) or
            `"positional"` (DDPM's sinusoidal features).
        fourier_scale (`float`, defaults to 16.0):
            Standard deviation of the random frequencies of the `"fourier"` embedding (NCSN++'s value).
        scale_output_by_sigma (`bool`, defaults to `True`):
            Return F_theta(x, log sigma) / sigma (NCSNv2 Technique 3). `False` returns F_theta itself as the score,
            NCSNv1-style, where only the embedding tells the network the noise level. Unused with `preconditioning`.
        preconditioning (`str`, *optional*, defaults to `None`):
            `"edm"`: EDM's preconditioning (Karras et al. 2022, Table 1). The network F_theta sees c_in x and
            predicts the denoiser D(x, sigma) = c_skip x + c_out F_theta(c_in x, log sigma), with c_in = 1 /
            sqrt(sigma^2 + sigma_data^2), c_skip = sigma_data^2 / (sigma^2 + sigma_data^2) and c_out = sigma
            sigma_data / sqrt(sigma^2 + sigma_data^2), so its input and its target have unit variance at every
            sigma; the model still returns the score, (D - x) / sigma^2 (Tweedie). `None`: the sample as it is and
            `scale_output_by_sigma`.
        sigma_data (`float`, defaults to 0.5):
            The data's standard deviation that `preconditioning="edm"` assumes (EDM's 0.5 for images in [-1, 1]).
    """

    _supports_gradient_checkpointing = True
    # The Fourier frequencies stay float32 under `from_pretrained(..., torch_dtype=...)` (and under `.to(dtype)`, see
    # `Float32GaussianFourierProjection`). diffusers keeps such modules only through accelerate's loading, and without
    # accelerate refuses to load a class that names any; there it loads in float32 and casts with
    # `.to(dtype)`, which keeps the frequencies float32 all the same.
    _keep_in_fp32_modules = ["sigma_proj"] if is_accelerate_available() else None
    _skip_layerwise_casting_patterns = ["sigma_proj", "norm"]
    # Saved configs get `auto_map: {"AutoModel": "unet_ncsn.NCSNUNet2DModel"}`, pointing at the copy of this file.
    _auto_class = "AutoModel"

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 3,
        block_out_channels: tuple[int, ...] = (128, 256, 256, 256),
        down_block_types: tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types: tuple[str, ...] = ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block: int = 2,
        add_attention: bool = True,
        attention_head_dim: int | None = None,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        act_fn: str = "silu",
        dropout: float = 0.0,
        resnet_time_scale_shift: str = "default",
        sigma_embedding_type: str = "fourier",
        fourier_scale: float = 16.0,
        scale_output_by_sigma: bool = True,
        preconditioning: str | None = None,
        sigma_data: float = 0.5,
    ):
        super().__init__()
        self._check_config()
        channels = list(block_out_channels)

        def head_dim(block_channels: int) -> int:
            return block_channels if attention_head_dim is None else attention_head_dim

        temb_channels = 4 * channels[0]
        block_kwargs = {
            "temb_channels": temb_channels,
            "resnet_eps": norm_eps,
            "resnet_act_fn": act_fn,
            "resnet_groups": norm_num_groups,
            "resnet_time_scale_shift": resnet_time_scale_shift,
            "dropout": dropout,
        }

        if sigma_embedding_type == "fourier":
            self.sigma_proj = Float32GaussianFourierProjection(channels[0], scale=fourier_scale, log=False)
            proj_channels = 2 * channels[0]
        else:
            self.sigma_proj = Timesteps(channels[0], flip_sin_to_cos=True, downscale_freq_shift=0)
            proj_channels = channels[0]
        self.time_embedding = TimestepEmbedding(proj_channels, temb_channels)

        self.conv_in = nn.Conv2d(in_channels, channels[0], kernel_size=3, padding=1)

        self.down_blocks = nn.ModuleList()
        for i, block_type in enumerate(down_block_types):
            self.down_blocks.append(
                get_down_block(
                    block_type,
                    num_layers=layers_per_block,
                    in_channels=channels[max(i - 1, 0)],
                    out_channels=channels[i],
                    add_downsample=i < len(channels) - 1,
                    attention_head_dim=head_dim(channels[i]),
                    downsample_padding=1,
                    **block_kwargs,
                )
            )

        self.mid_block = UNetMidBlock2D(
            in_channels=channels[-1],
            temb_channels=temb_channels,
            dropout=dropout,
            resnet_eps=norm_eps,
            resnet_act_fn=act_fn,
            resnet_groups=norm_num_groups,
            resnet_time_scale_shift=resnet_time_scale_shift,
            attention_head_dim=head_dim(channels[-1]),
            add_attention=add_attention,
        )

        reversed_channels = channels[::-1]
        self.up_blocks = nn.ModuleList()
        for i, block_type in enumerate(up_block_types):
            self.up_blocks.append(
                get_up_block(
                    block_type,
                    num_layers=layers_per_block + 1,
                    in_channels=reversed_channels[min(i + 1, len(channels) - 1)],
                    out_channels=reversed_channels[i],
                    prev_output_channel=reversed_channels[max(i - 1, 0)],
                    add_upsample=i < len(channels) - 1,
                    attention_head_dim=head_dim(reversed_channels[i]),
                    **block_kwargs,
                )
            )

        self.conv_norm_out = nn.GroupNorm(num_groups=norm_num_groups, num_channels=channels[0], eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(channels[0], in_channels, kernel_size=3, padding=1)

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        # `auto_map` is for `diffusers.AutoModel`, not an argument of `__init__`.
        config_dict = {key: value for key, value in config_dict.items() if key != "auto_map"}
        return super().extract_init_dict(config_dict, **kwargs)

    def save_config(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs):
        r"""
        Saves config.json as [`~diffusers.ConfigMixin.save_config`] does, plus a copy of this module, `unet_ncsn.py`,
        which the config's `auto_map` names: with it the folder (or a Hub repo pushed from it) loads without
        ncsn-diffusers through `diffusers.AutoModel.from_pretrained(folder, trust_remote_code=True)`.

        `save_pretrained` is `ModelMixin`'s own (it calls this before writing the weights, so `push_to_hub=True`
        uploads the file too): `DiffusionPipeline.save_pretrained` forwards `variant`, `safe_serialization` and
        `max_shard_size` only to components whose `save_pretrained` names them.
        """
        os.makedirs(save_directory, exist_ok=True)
        shutil.copyfile(__file__, os.path.join(save_directory, os.path.basename(__file__)))
        super().save_config(save_directory, push_to_hub=push_to_hub, **kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "NCSNUNet2DModel":
        r"""
        Builds a freshly initialised model from a named size preset.

        Args:
            name (`str`):
                `"tiny"` (tests, 1x16x16), `"digits"` (16x16 grayscale digits on a CPU) or `"cifar10"` (3x32x32,
                ~36M parameters, for a GPU).
            overrides:
                Config values that replace the preset's, e.g. `in_channels=3` or `scale_output_by_sigma=False`.
        """
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; `name` must be one of {sorted(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})

    def forward(
        self, sample: torch.Tensor, sigma: torch.Tensor | float, return_dict: bool = True
    ) -> UNet2DOutput | tuple:
        r"""
        Estimates the score s_theta(sample, sigma).

        Args:
            sample (`torch.Tensor` of shape `(batch, in_channels, height, width)`):
                The perturbed sample x + sigma * z.
            sigma (`float` or `torch.Tensor`):
                The positive noise level: one for the whole batch (python number or 0-d tensor) or one per sample
                (shape `(batch,)`, or any shape with `batch` elements such as `(batch, 1, 1, 1)`).
            return_dict (`bool`, defaults to `True`):
                Whether to return a [`~models.unets.unet_2d.UNet2DOutput`] instead of a plain tuple.

        Returns:
            [`~models.unets.unet_2d.UNet2DOutput`] or `tuple`: the score estimate, shaped like `sample`, in
            `.sample` (or as the tuple's only element).
        """
        self._check_sample(sample)
        sigma = self._sigma_per_sample(sigma, sample.shape[0], sample.device)  # (B,) float32

        # The embedding is computed in float32 (log of small sigmas, high frequencies) and cast to the dtype the
        # network computes in, that of `sample` (not that of a weight: under layerwise casting the weights are stored
        # in float8 and computed in bfloat16).
        emb = self.sigma_proj(torch.log(sigma))
        emb = self.time_embedding(emb.to(sample.dtype))

        edm = self.config.preconditioning == "edm"
        if edm:
            sigma_b = sigma.reshape(-1, 1, 1, 1)
            total_var = sigma_b**2 + self.config.sigma_data**2  # sigma^2 + sigma_data^2, the variance of x
            c_in = total_var.rsqrt()
        hidden = self.conv_in(sample * c_in.to(sample.dtype) if edm else sample)
        skips = (hidden,)
        for block in self.down_blocks:
            hidden, res_samples = block(hidden_states=hidden, temb=emb)
            skips += res_samples

        hidden = self.mid_block(hidden, emb)

        for block in self.up_blocks:
            num_skips = len(block.resnets)
            hidden = block(hidden, skips[-num_skips:], emb)
            skips = skips[:-num_skips]

        output = self.conv_out(self.conv_act(self.conv_norm_out(hidden)))
        if edm:
            # D = c_skip x + c_out F, score = (D - x) / sigma^2 = c_out F / sigma^2 - x / (sigma^2 + sigma_data^2)
            c_out = sigma_b * self.config.sigma_data * c_in
            output = (c_out / sigma_b**2).to(output.dtype) * output - sample / total_var.to(sample.dtype)
        elif self.config.scale_output_by_sigma:
            # NCSNv2 Technique 3: s_theta(x, sigma) = F_theta(x, log sigma) / sigma
            output = output / sigma.reshape(-1, 1, 1, 1).to(output.dtype)

        if not return_dict:
            return (output,)
        return UNet2DOutput(sample=output)

    def _check_config(self):
        config = self.config
        if len(config.down_block_types) != len(config.block_out_channels) or len(config.up_block_types) != len(
            config.block_out_channels
        ):
            raise ValueError(
                f"`down_block_types` ({len(config.down_block_types)}), `up_block_types` ({len(config.up_block_types)})"
                f" and `block_out_channels` ({len(config.block_out_channels)}) need one entry per resolution."
            )
        for name, allowed in (("down_block_types", DOWN_BLOCK_TYPES), ("up_block_types", UP_BLOCK_TYPES)):
            unknown = [block for block in getattr(config, name) if block not in allowed]
            if unknown:
                raise ValueError(f"`{name}` has unsupported blocks {unknown}; choose from {list(allowed)}.")
        if config.sigma_embedding_type not in SIGMA_EMBEDDING_TYPES:
            raise ValueError(
                f"`sigma_embedding_type` is {config.sigma_embedding_type!r}; choose from {list(SIGMA_EMBEDDING_TYPES)}."
            )
        if config.preconditioning not in (None, "edm"):
            raise ValueError(f"`preconditioning` is {config.preconditioning!r}; choose None or 'edm'.")
        if not config.sigma_data > 0:
            raise ValueError(f"`sigma_data`={config.sigma_data} must be > 0 (EDM's 0.5 for images in [-1, 1]).")
        if any(channels % config.norm_num_groups for channels in config.block_out_channels):
            raise ValueError(
                f"`norm_num_groups`={config.norm_num_groups} must divide every entry of `block_out_channels`"
                f"={tuple(config.block_out_channels)}."
            )

    def _check_sample(self, sample: torch.Tensor):
        if sample.ndim != 4 or sample.shape[1] != self.config.in_channels:
            raise ValueError(
                f"`sample` has shape {tuple(sample.shape)}, expected (batch, {self.config.in_channels}, height, width);"
                " pass images with `in_channels` channels or build the model with `in_channels` set to match."
            )
        factor = 2 ** (len(self.config.block_out_channels) - 1)
        height, width = sample.shape[-2:]
        if height % factor or width % factor:
            raise ValueError(
                f"`sample` is {height}x{width}, but this model downsamples {factor}x, so height and width must be"
                f" divisible by {factor}; resize or pad the images (or use fewer `block_out_channels`)."
            )

    @staticmethod
    def _sigma_per_sample(sigma: torch.Tensor | float, batch_size: int, device: torch.device) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=device).to(torch.float32).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(batch_size)
        elif sigma.numel() != batch_size:
            raise ValueError(
                f"`sigma` has {sigma.numel()} values for a batch of {batch_size}; pass one noise level or one per sample."
            )
        if not torch.all(sigma > 0):
            raise ValueError(
                f"`sigma` must be positive (the network is conditioned on log sigma), got a minimum of {sigma.min()}."
            )
        return sigma
