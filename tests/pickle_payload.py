"""A pickle that runs code when loaded: the stand-in for a payload planted in a checkpoint."""

import torch


class Payload:
    """Unpickling it creates the file `marker` (by calling `open(marker, "w")`)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_payloads(folder, marker, names):
    """Writes a payload under each of `names` in `folder`, in torch's format (what accelerate's load_state reads)."""
    for name in names:
        torch.save(Payload(marker), folder / name)
