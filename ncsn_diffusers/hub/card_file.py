"""Where a saved folder keeps its model card: `README.md`, which the Hub shows on the model's page."""

from pathlib import Path

CARD_FILE = "README.md"


def write_card(save_directory, card: str) -> Path:
    """Writes the rendered `card` to `save_directory/README.md` (the folder created if missing) and returns its path."""
    path = Path(save_directory) / CARD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(card, encoding="utf-8")
    return path
