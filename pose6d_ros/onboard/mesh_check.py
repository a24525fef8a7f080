"""What a new mesh holds before it becomes an object: size and units, defects, colour."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trimesh

from pose6d_ros.core.objects import UNITS, ObjectsConfigError, hull_diameter, read_mesh

# Sizes (largest extent, metres) of objects a tabletop pose node sees; a guess of units is
# the one reading of the numbers that lands here.
_PLAUSIBLE_M = (0.01, 1.0)


@dataclass
class MeshReport:
    """Facts about one mesh file; lengths in the mesh's own units unless named `_m`."""

    path: Path
    vertices: int
    faces: int
    extents: np.ndarray  # (3,) bounding-box sides
    diameter: float
    units: str  # chosen: given, or guessed
    units_guessed: bool
    degenerate_faces: int = 0
    non_manifold_edges: int = 0
    boundary_edges: int = 0
    colours: str = "none"  # "vertex", "texture" or "none"
    warnings: list[str] = field(default_factory=list)

    @property
    def diameter_m(self) -> float:
        return self.diameter * UNITS[self.units]

    def lines(self) -> list[str]:
        """The report, one fact a line."""
        e = self.extents * UNITS[self.units] * 1e3
        how = "guessed from its size" if self.units_guessed else "as given"
        return [f"mesh {self.path}: {self.vertices} vertices, {self.faces} faces",
                f"  units: {self.units} ({how}): {e[0]:.1f} x {e[1]:.1f} x {e[2]:.1f} mm, "
                f"diameter {1e3 * self.diameter_m:.1f} mm",
                f"  colours: {self.colours}",
                f"  defects: {self.degenerate_faces} degenerate faces, {self.non_manifold_edges} "
                f"non-manifold edges, {self.boundary_edges} open (boundary) edges",
                *(f"  warning: {w}" for w in self.warnings)]


def guess_units(largest_extent: float) -> tuple[str, bool]:
    """`(units, unambiguous)`: the units under which the object has a tabletop size."""
    fits = [u for u in ("mm", "cm", "m")
            if _PLAUSIBLE_M[0] <= largest_extent * UNITS[u] <= _PLAUSIBLE_M[1]]
    if not fits:
        return ("m" if largest_extent < 1 else "mm"), False
    return fits[0], len(fits) == 1


def check_mesh(path: str | Path, units: str = "auto") -> tuple[trimesh.Trimesh, MeshReport]:
    """Load `path` and report its size, units (`auto` guesses), defects and colours."""
    mesh = read_mesh(path)
    extents = np.asarray(mesh.extents, dtype=float)
    warnings: list[str] = []
    guessed = units == "auto"
    if guessed:
        units, clear = guess_units(float(extents.max()))
        if not clear:
            warnings.append(f"units are ambiguous for a largest side of {extents.max():.4g}: "
                            f"taken as {units}; pass --units to be sure")
    elif units not in UNITS:
        raise ObjectsConfigError(f"{path}: units {units!r} must be auto or one of "
                                 f"{sorted(UNITS)}")
    size_m = extents.max() * UNITS[units]
    if not _PLAUSIBLE_M[0] <= size_m <= _PLAUSIBLE_M[1]:
        warnings.append(f"the object is {1e3 * size_m:.1f} mm across in {units}: check --units")

    areas = np.asarray(mesh.area_faces)
    degenerate = int((areas <= 1e-12 * max(float(extents.max()) ** 2, 1e-12)).sum())
    edges = np.sort(np.asarray(mesh.edges), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    non_manifold = int((counts > 2).sum())
    boundary = int((counts == 1).sum())
    colours = _colours(mesh)
    if degenerate:
        warnings.append(f"{degenerate} faces have no area; they are ignored")
    if non_manifold:
        warnings.append(f"{non_manifold} edges are shared by more than two faces")
    if boundary:
        warnings.append(f"the surface is open ({boundary} boundary edges): masks and depth "
                        "still work, but holes show as background")
    if colours == "none":
        warnings.append("no vertex colours or texture: templates and contour refinement "
                        "see a grey object, so they rely on its outline")
    report = MeshReport(path=Path(path), vertices=len(mesh.vertices), faces=len(mesh.faces),
                        extents=extents, diameter=hull_diameter(mesh), units=units,
                        units_guessed=guessed, degenerate_faces=degenerate,
                        non_manifold_edges=non_manifold, boundary_edges=boundary,
                        colours=colours, warnings=warnings)
    return mesh, report


def _colours(mesh: trimesh.Trimesh) -> str:
    visual = mesh.visual
    if getattr(visual, "kind", None) == "texture":
        return "texture"
    if getattr(visual, "kind", None) in ("vertex", "face"):
        rgb = np.asarray(visual.vertex_colors)[:, :3]
        return "vertex" if len(np.unique(rgb, axis=0)) > 1 else "none"
    return "none"
