"""Headless OpenGL renderer (moderngl + EGL) for meshes seen by an OpenCV pinhole camera.

One `render` call draws every instance once for the visible outputs (shaded RGB, depth,
which instance each pixel shows, the object-space point each pixel shows) and once more per
instance, alone, for its full (amodal) mask and coordinate map. Runs on Mesa's llvmpipe
(CPU) or on a GPU driver's EGL. Poses are `T_cam_obj` in metres, camera x right, y down,
z forward; pixel (u, v) has its centre at integer coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trimesh

# Lighting is evaluated per vertex (Gouraud): a software rasteriser's time goes into
# fragments, and per-vertex shading of dense scanned meshes looks the same at 640x480.
_VERTEX = """
#version 330
const int MAX_LIGHTS = 4;
uniform mat4 proj;
uniform mat3 rot;
uniform vec3 trans;
uniform vec3 gain;
uniform float specular;
uniform float shininess;
uniform vec3 ambient;
uniform int n_lights;
uniform vec3 light_dir[MAX_LIGHTS];
uniform vec3 light_color[MAX_LIGHTS];
in vec3 in_pos;
in vec3 in_normal;
in vec3 in_color;
in vec2 in_uv;
out vec3 v_obj;
out float v_z;
out vec3 v_diffuse;
out vec3 v_base;
out vec3 v_spec;
out vec2 v_uv;
void main() {
    vec3 p = rot * in_pos + trans;
    vec3 view = normalize(-p);
    vec3 n = normalize(rot * in_normal);
    if (dot(n, view) < 0.0) n = -n;  // two-sided: scanned meshes have holes
    vec3 diffuse = ambient;
    vec3 spec = vec3(0.0);
    for (int i = 0; i < n_lights; ++i) {
        vec3 l = normalize(light_dir[i]);
        float d = max(dot(n, l), 0.0);
        diffuse += light_color[i] * d;
        if (d > 0.0) spec += light_color[i] * pow(max(dot(n, normalize(l + view)), 0.0),
                                                  shininess);
    }
    v_obj = in_pos;
    v_z = p.z;
    v_diffuse = diffuse;
    v_base = in_color * gain;
    v_spec = specular * spec;
    v_uv = in_uv;
    gl_Position = proj * vec4(p, 1.0);
}
"""

_FRAGMENT = """
#version 330
uniform float code;
uniform bool use_texture;
uniform vec3 gain;
uniform sampler2D tex;
in vec3 v_obj;
in float v_z;
in vec3 v_diffuse;
in vec3 v_base;
in vec3 v_spec;
in vec2 v_uv;
layout(location = 0) out vec4 f_color;
layout(location = 1) out vec4 f_geom;
void main() {
    vec3 base = use_texture ? texture(tex, v_uv).rgb * gain : v_base;
    f_color = vec4(clamp(base * v_diffuse + v_spec, 0.0, 1.0), code);
    f_geom = vec4(v_obj, v_z);
}
"""

# The amodal pass only needs object coordinates.
_GEOM_VERTEX = """
#version 330
uniform mat4 proj;
uniform mat3 rot;
uniform vec3 trans;
in vec3 in_pos;
out vec3 v_obj;
void main() {
    v_obj = in_pos;
    gl_Position = proj * vec4(rot * in_pos + trans, 1.0);
}
"""

_GEOM_FRAGMENT = """
#version 330
in vec3 v_obj;
out vec4 f_geom;
void main() {
    f_geom = vec4(v_obj, 1.0);
}
"""

MAX_LIGHTS = 4
MAX_INSTANCES = 254  # instance codes live in an 8-bit channel, 0 = background
_DEFAULT_COLOR = (0.7, 0.7, 0.7)


class RenderError(RuntimeError):
    """The GL context or a mesh could not be set up."""


@dataclass
class Lighting:
    """Ambient light plus up to four directional lights, all in the camera frame."""

    ambient: np.ndarray = field(default_factory=lambda: np.full(3, 0.35))  # (3,) RGB
    directions: np.ndarray = field(  # (L, 3), from the surface towards the light
        default_factory=lambda: np.array([[0.0, -0.5, -1.0]]))
    colors: np.ndarray = field(default_factory=lambda: np.full((1, 3), 0.75))  # (L, 3) RGB


@dataclass
class Material:
    """Per-instance appearance: a colour gain on the mesh colours and a Blinn-Phong lobe."""

    gain: np.ndarray = field(default_factory=lambda: np.ones(3))  # (3,) RGB multiplier
    specular: float = 0.1
    shininess: float = 20.0


@dataclass
class Instance:
    """One mesh placed in the camera frame."""

    mesh: str  # key given to `Renderer.add_mesh`
    R: np.ndarray  # (3, 3) T_cam_obj rotation
    t: np.ndarray  # (3,) metres
    material: Material = field(default_factory=Material)


@dataclass
class AmodalView:
    """An instance rendered alone, cropped to its box (clipped to the image)."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), pixels
    xyz: np.ndarray  # (y1-y0, x1-x0, 3) float32 object coordinates, metres
    mask: np.ndarray  # (y1-y0, x1-x0) bool
    vertex_box: tuple[int, int, int, int] | None  # see Renderer.vertex_box (unclipped)


@dataclass
class RenderOutput:
    """Everything one `render` call produces for an (H, W) image with n instances."""

    rgb: np.ndarray  # (H, W, 3) uint8 shaded, black where no instance
    depth: np.ndarray  # (H, W) float32 camera z in metres, 0 where no instance
    instance: np.ndarray  # (H, W) int16 index of the visible instance, -1 where none
    xyz: np.ndarray  # (H, W, 3) float32 object-space point shown by each pixel, 0 elsewhere
    amodal: list[AmodalView]  # n entries

    def mask_visib(self, i: int) -> np.ndarray:
        """`(H, W)` bool: the pixels where instance i is visible."""
        return self.instance == i

    def mask_full(self, i: int) -> np.ndarray:
        """`(H, W)` bool: the pixels instance i covers when alone (amodal mask)."""
        out = np.zeros(self.instance.shape, bool)
        x0, y0, x1, y1 = self.amodal[i].box
        out[y0:y1, x0:x1] = self.amodal[i].mask
        return out

    def xyz_full(self, i: int) -> np.ndarray:
        """`(H, W, 3)` float32: instance i's amodal coordinate map, 0 outside its mask."""
        out = np.zeros((*self.instance.shape, 3), np.float32)
        x0, y0, x1, y1 = self.amodal[i].box
        out[y0:y1, x0:x1] = self.amodal[i].xyz
        return out


def projection_matrix(K: np.ndarray, width: int, height: int, near: float,
                      far: float) -> np.ndarray:
    """`(4, 4)` clip matrix for OpenCV intrinsics `K (3, 3)`.

    GL window row j is image row v = j, so a read-back buffer needs no flip: NDC y grows
    with v. Pixel centres sit at window coordinates (u + 0.5, v + 0.5).
    """
    fx, s, cx = K[0]
    fy, cy = K[1, 1], K[1, 2]
    P = np.zeros((4, 4))
    P[0] = [2 * fx / width, 2 * s / width, (2 * cx + 1) / width - 1, 0]
    P[1] = [0, 2 * fy / height, (2 * cy + 1) / height - 1, 0]
    P[2] = [0, 0, (far + near) / (far - near), -2 * far * near / (far - near)]
    P[3] = [0, 0, 1, 0]
    return P


def _mesh_arrays(mesh: trimesh.Trimesh) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Interleaved float32 vertices `(V, 11)` (pos, normal, rgb, uv), faces `(F, 3)`, texture."""
    V = len(mesh.vertices)
    data = np.zeros((V, 11), np.float32)
    data[:, 0:3] = mesh.vertices
    data[:, 3:6] = mesh.vertex_normals
    data[:, 6:9] = _DEFAULT_COLOR
    texture = None
    visual = mesh.visual
    if visual.kind == "vertex":
        data[:, 6:9] = np.asarray(visual.vertex_colors)[:, :3] / 255.0
    elif visual.kind == "texture" and visual.uv is not None:
        material = visual.material
        image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
        if image is not None:
            data[:, 9:11] = visual.uv
            # GL samples row 0 at v = 0, the bottom of the picture in UV convention.
            texture = np.ascontiguousarray(np.asarray(image.convert("RGB"))[::-1])
        else:
            data[:, 6:9] = np.asarray(visual.to_color().vertex_colors)[:, :3] / 255.0
    elif visual.kind == "face":
        data[:, 6:9] = np.asarray(visual.vertex_colors)[:, :3] / 255.0
    return data, np.asarray(mesh.faces, np.int32), texture


def simplify_mesh(mesh: trimesh.Trimesh, max_faces: int) -> trimesh.Trimesh:
    """`mesh` decimated to at most `max_faces` faces (quadric), colours moved to vertices.

    A software rasteriser's time grows with the triangle count, not the pixel count; scanned
    meshes carry far more triangles than a 640x480 image resolves. 0 keeps the mesh.
    """
    if max_faces <= 0 or len(mesh.faces) <= max_faces:
        return mesh
    from scipy.spatial import cKDTree

    visual = mesh.visual
    colors = np.asarray((visual if visual.kind == "vertex" else visual.to_color()).vertex_colors)
    small = mesh.simplify_quadric_decimation(face_count=max_faces)
    nearest = cKDTree(mesh.vertices).query(small.vertices)[1]
    small.visual = trimesh.visual.ColorVisuals(small, vertex_colors=colors[nearest])
    return small


@dataclass
class _GpuMesh:
    shaded: Any  # moderngl.VertexArray for the shaded pass
    geom: Any  # moderngl.VertexArray for the coordinate-only pass
    texture: Any  # moderngl.Texture or None
    vertices: np.ndarray  # (V, 3) float64, for boxes
    buffers: tuple  # keeps the GL buffers alive


class Renderer:
    """Offscreen renderer for one image size; meshes are uploaded once, then drawn by key.

    `backend` is moderngl's context backend: "egl" (default, headless: Mesa llvmpipe on a
    CPU, the NVIDIA driver on a GPU) or None for the platform default.
    """

    def __init__(self, width: int, height: int, *, near: float = 0.01, far: float = 20.0,
                 backend: str | None = "egl") -> None:
        import moderngl

        try:
            kwargs = {"backend": backend} if backend else {}
            self.ctx = moderngl.create_standalone_context(require=330, **kwargs)
        except Exception as exc:
            raise RenderError(
                f"cannot create an OpenGL 3.3 context ({backend or 'default'} backend): {exc}. "
                "On Debian/Ubuntu install libegl1 libegl-mesa0 libgl1-mesa-dri "
                "(scripts/setup.sh does this).") from exc
        self.width, self.height, self.near, self.far = width, height, near, far
        self.program = self.ctx.program(vertex_shader=_VERTEX, fragment_shader=_FRAGMENT)
        self._geom_program = self.ctx.program(vertex_shader=_GEOM_VERTEX,
                                              fragment_shader=_GEOM_FRAGMENT)
        self._color = self.ctx.texture((width, height), 4, dtype="f1")
        self._geom = self.ctx.texture((width, height), 4, dtype="f4")
        self.fbo = self.ctx.framebuffer([self._color, self._geom],
                                        self.ctx.depth_renderbuffer((width, height)))
        # Amodal views are drawn side by side into one atlas and read back together: a
        # read-back waits for the rasteriser, so one per instance would stall it each time.
        self._atlas_size = (2 * width, 2 * height)
        self._atlas = self.ctx.framebuffer(
            [self.ctx.texture(self._atlas_size, 4, dtype="f4")],
            self.ctx.depth_renderbuffer(self._atlas_size))
        self._meshes: dict[str, _GpuMesh] = {}
        self._white = self.ctx.texture((1, 1), 3, data=bytes([255, 255, 255]))

    def add_mesh(self, key: str, mesh: trimesh.Trimesh) -> None:
        """Upload `mesh` (metres; vertex colours, a texture, or plain grey) under `key`."""
        data, faces, texture = _mesh_arrays(mesh)
        if len(faces) == 0:
            raise RenderError(f"mesh {key!r} has no faces")
        vbo = self.ctx.buffer(data.tobytes())
        ibo = self.ctx.buffer(faces.tobytes())
        shaded = self.ctx.vertex_array(
            self.program, [(vbo, "3f 3f 3f 2f", "in_pos", "in_normal", "in_color", "in_uv")],
            index_buffer=ibo, index_element_size=4)
        geom = self.ctx.vertex_array(self._geom_program, [(vbo, "3f 32x", "in_pos")],
                                     index_buffer=ibo, index_element_size=4)
        tex = None
        if texture is not None:
            tex = self.ctx.texture((texture.shape[1], texture.shape[0]), 3, texture.tobytes())
            tex.build_mipmaps()
        self._meshes[key] = _GpuMesh(shaded, geom, tex, np.asarray(mesh.vertices, np.float64),
                                     (vbo, ibo))

    def render(self, K: np.ndarray, instances: list[Instance],
               lighting: Lighting | None = None, *, amodal: bool = True) -> RenderOutput:
        """Render `instances` through intrinsics `K (3, 3)`; see `RenderOutput`."""
        if len(instances) > MAX_INSTANCES:
            raise ValueError(f"at most {MAX_INSTANCES} instances per image, got {len(instances)}")
        for inst in instances:
            if inst.mesh not in self._meshes:
                raise KeyError(f"renderer: no mesh {inst.mesh!r}; call add_mesh first")
        K = np.asarray(K, np.float64)
        W, H = self.width, self.height
        self.ctx.enable(self.ctx.DEPTH_TEST)
        self.ctx.disable(self.ctx.CULL_FACE)
        self._write(self.program, "proj", projection_matrix(K, W, H, self.near, self.far))
        self._set_lighting(lighting or Lighting())
        self.fbo.use()
        self.fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        for i, inst in enumerate(instances):
            self._draw_shaded(inst, code=(i + 1) / 255.0)
        color = np.frombuffer(self.fbo.read(components=4, attachment=0), np.uint8)
        geom = np.frombuffer(self.fbo.read(components=4, attachment=1, dtype="f4"), np.float32)
        color = color.reshape(H, W, 4)
        geom = geom.reshape(H, W, 4)
        # Cleared to zero, so background pixels already read depth 0 and xyz 0.
        instance = color[..., 3].astype(np.int16) - 1
        depth = np.ascontiguousarray(geom[..., 3])
        xyz = np.ascontiguousarray(geom[..., :3])
        rgb = np.ascontiguousarray(color[..., :3])
        views = self._amodal_views(K, instances) if amodal else []
        return RenderOutput(rgb=rgb, depth=depth, instance=instance, xyz=xyz, amodal=views)

    def _amodal_views(self, K: np.ndarray, instances: list[Instance]) -> list[AmodalView]:
        """Each instance drawn alone inside its projected box (shelf-packed into the atlas)."""
        AW, AH = self._atlas_size
        views: list[AmodalView | None] = [None] * len(instances)
        batch: list[tuple[int, tuple[int, int, int, int], int, int]] = []
        x = y = shelf = 0
        vboxes = [self.vertex_box(K, inst) for inst in instances]
        for i, vbox in enumerate(vboxes):
            box = self._clipped(vbox)
            w, h = box[2] - box[0], box[3] - box[1]
            if w <= 0 or h <= 0:  # entirely outside the image
                views[i] = AmodalView((0, 0, 0, 0), np.zeros((0, 0, 3), np.float32),
                                      np.zeros((0, 0), bool), vbox)
                continue
            if x + w > AW:
                x, y, shelf = 0, y + shelf, 0
            if y + h > AH:
                self._flush_atlas(K, instances, vboxes, batch, views)
                batch, x, y, shelf = [], 0, 0, 0
            batch.append((i, box, x, y))
            x, shelf = x + w, max(shelf, h)
        self._flush_atlas(K, instances, vboxes, batch, views)
        return views  # type: ignore[return-value]

    def _flush_atlas(self, K: np.ndarray, instances: list[Instance], vboxes: list,
                     batch: list, views: list) -> None:
        if not batch:
            return
        AW, AH = self._atlas_size
        atlas, prog = self._atlas, self._geom_program
        atlas.use()
        for i, (x0, y0, x1, y1), ax, ay in batch:
            tile = (ax, ay, x1 - x0, y1 - y0)
            atlas.clear(0.0, 0.0, 0.0, 0.0, depth=1.0, viewport=tile)
            atlas.scissor = tile  # a box clipped by the image edge must not spill over
            K_tile = K.copy()
            K_tile[0, 2] += ax - x0
            K_tile[1, 2] += ay - y0
            self._write(prog, "proj", projection_matrix(K_tile, AW, AH, self.near, self.far))
            self._write(prog, "rot", np.asarray(instances[i].R, np.float64))
            prog["trans"].value = tuple(float(v) for v in instances[i].t)
            self._meshes[instances[i].mesh].geom.render()
        atlas.scissor = None
        used = max(ay + y1 - y0 for _, (x0, y0, x1, y1), ax, ay in batch)
        data = np.frombuffer(atlas.read(viewport=(0, 0, AW, used), components=4, dtype="f4"),
                             np.float32).reshape(used, AW, 4)
        for i, (x0, y0, x1, y1), ax, ay in batch:
            tile = data[ay:ay + y1 - y0, ax:ax + x1 - x0]
            views[i] = AmodalView((x0, y0, x1, y1), np.ascontiguousarray(tile[..., :3]),
                                  tile[..., 3] > 0, vboxes[i])

    def vertex_box(self, K: np.ndarray, inst: Instance) -> tuple[int, int, int, int] | None:
        """Pixel box (x0, y0, x1, y1), end exclusive, unclipped, of the pixels whose centres
        the projected vertices of `inst` span; None when the mesh crosses the near plane."""
        verts = self._meshes[inst.mesh].vertices
        p = verts @ np.asarray(inst.R, np.float64).T + np.asarray(inst.t, np.float64)
        if (p[:, 2] <= self.near).any():
            return None
        uv = p @ np.asarray(K, np.float64).T
        uv = uv[:, :2] / uv[:, 2:3]
        x0, y0 = np.floor(uv.min(0) + 0.5).astype(int)
        x1, y1 = np.floor(uv.max(0) + 0.5).astype(int) + 1
        return int(x0), int(y0), int(x1), int(y1)

    def _clipped(self, box: tuple[int, int, int, int] | None) -> tuple[int, int, int, int]:
        """A `vertex_box` grown by a pixel against rounding, clipped to the image."""
        if box is None:
            return 0, 0, self.width, self.height
        x0, y0, x1, y1 = box
        return (max(x0 - 1, 0), max(y0 - 1, 0), min(x1 + 1, self.width),
                min(y1 + 1, self.height))

    def _draw_shaded(self, inst: Instance, code: float) -> None:
        mesh, prog, m = self._meshes[inst.mesh], self.program, inst.material
        self._write(prog, "rot", np.asarray(inst.R, np.float64))
        prog["trans"].value = tuple(float(x) for x in inst.t)
        prog["code"].value = code
        prog["gain"].value = tuple(float(x) for x in m.gain)
        prog["specular"].value = float(m.specular)
        prog["shininess"].value = float(m.shininess)
        prog["use_texture"].value = mesh.texture is not None
        (mesh.texture or self._white).use(0)
        prog["tex"].value = 0
        mesh.shaded.render()

    @staticmethod
    def _write(prog, name: str, M: np.ndarray) -> None:
        # GLSL matrices are column-major.
        prog[name].write(np.ascontiguousarray(M.T, np.float32).tobytes())

    def _set_lighting(self, lighting: Lighting) -> None:
        prog = self.program
        dirs = np.asarray(lighting.directions, np.float32).reshape(-1, 3)
        cols = np.asarray(lighting.colors, np.float32).reshape(-1, 3)
        if len(dirs) != len(cols) or len(dirs) > MAX_LIGHTS:
            raise ValueError(f"lighting: need as many colours as directions, at most "
                             f"{MAX_LIGHTS}; got {len(dirs)} and {len(cols)}")
        prog["ambient"].value = tuple(float(x) for x in np.asarray(lighting.ambient).ravel())
        prog["n_lights"].value = len(dirs)
        pad = np.zeros((MAX_LIGHTS, 3), np.float32)
        pad[: len(dirs)] = dirs
        prog["light_dir"].write(pad.tobytes())
        pad[:] = 0
        pad[: len(cols)] = cols
        prog["light_color"].write(pad.tobytes())

    def release(self) -> None:
        """Free the GL context."""
        self.ctx.release()
