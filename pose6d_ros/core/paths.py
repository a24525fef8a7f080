"""Where the package's bundled files (config/, models/) are: source checkout or install."""

import sys
from pathlib import Path

PACKAGE = "pose6d_ros"


def share_dir() -> Path:
    """The folder holding config/ and models/ (source tree, pip prefix or colcon install)."""
    here = Path(__file__).resolve()
    candidates = [here.parents[2]]  # source checkout or editable install
    candidates.append(Path(sys.prefix) / "share" / PACKAGE)  # pip install
    if len(here.parents) > 5:  # colcon: install/<pkg>/lib/pythonX/site-packages/<pkg>/core
        candidates.append(here.parents[5] / "share" / PACKAGE)
    for c in candidates:
        if (c / "config" / "objects.yaml").is_file():
            return c
    raise FileNotFoundError(f"{PACKAGE}: bundled config not found; looked in "
                            + ", ".join(str(c) for c in candidates))


def default_objects_yaml() -> Path:
    """The bundled objects YAML (the 8 LM-O demo objects)."""
    return share_dir() / "config" / "objects.yaml"


def default_weights(kind: str) -> Path:
    """The shipped weights of `kind` ("detector" or "coordnet") for the bundled objects."""
    return share_dir() / "models" / f"{kind}.pt"


def sample_scene() -> Path:
    """The bundled BOP scene of five real LM-O photographs with ground truth."""
    return share_dir() / "models" / "lmo" / "samples"
