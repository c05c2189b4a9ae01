"""Noise Conditional Score Networks (Song & Ermon, 2019) for Hugging Face diffusers."""

__version__ = "0.1.0"
