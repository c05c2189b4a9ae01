"""The Hub's address and a quick probe of whether it answers (before a download that would retry for long)."""

import socket
from urllib.parse import urlparse

from huggingface_hub import constants


def hub_endpoint() -> str:
    """The Hub's URL: huggingface_hub's, which `HF_ENDPOINT` sets."""
    return constants.ENDPOINT


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub endpoint opens within `timeout` seconds (no retries)."""
    url = urlparse(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False
