"""The renderer: OpenCV camera convention, pixel centres, masks, depth, coordinate maps."""

import cv2
import numpy as np
import pytest
import trimesh
from PIL import Image

from pose6d_ros.data.render import Instance, Lighting, Material, Renderer, simplify_mesh

W, H = 160, 120


@pytest.fixture(scope="module")
def renderer():
    r = Renderer(W, H)
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=0.05)
    r.add_mesh("sphere", sphere)
    r.add_mesh("box", trimesh.creation.box(extents=[0.1, 0.06, 0.04]))
    yield r
    r.release()


def camera(cx: float = 80.0, cy: float = 60.0) -> np.ndarray:
    return np.array([[150.0, 0, cx], [0, 160.0, cy], [0, 0, 1]])


def test_point_on_the_optical_axis_lands_on_the_principal_point(renderer):
    # A sphere on the axis projects to a disc centred on (cx, cy), pixel centres at integer
    # coordinates: for integer and half-integer centres the covered pixels are symmetric
    # about it, so their centroid is exact; otherwise up to discretisation.
    for cx, cy, tol in [(80.0, 60.0, 1e-9), (80.5, 59.5, 1e-9), (70.25, 65.0, 0.03)]:
        out = renderer.render(camera(cx, cy), [Instance("sphere", np.eye(3), [0, 0, 0.3])])
        v, u = np.nonzero(out.mask_visib(0))
        assert abs(u.mean() - cx) <= tol and abs(v.mean() - cy) <= tol


def test_opencv_axes_x_right_y_down(renderer):
    K = camera()
    right = renderer.render(K, [Instance("sphere", np.eye(3), [0.1, 0, 1.0])])
    down = renderer.render(K, [Instance("sphere", np.eye(3), [0, 0.1, 1.0])])
    v, u = np.nonzero(right.mask_visib(0))
    assert u.mean() == pytest.approx(80 + 150 * 0.1, abs=0.5)
    assert v.mean() == pytest.approx(60, abs=0.3)
    v, u = np.nonzero(down.mask_visib(0))
    assert v.mean() == pytest.approx(60 + 160 * 0.1, abs=0.5)
    behind = renderer.render(K, [Instance("sphere", np.eye(3), [0, 0, -1.0])])
    assert not behind.mask_visib(0).any()


def test_sphere_mask_and_depth_match_the_analytic_sphere(renderer):
    K = camera()
    c = np.array([0.02, -0.01, 0.6])
    out = renderer.render(K, [Instance("sphere", np.eye(3), c)])
    vv, uu = np.mgrid[0:H, 0:W]
    rays = np.stack([(uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], np.ones_like(uu)], -1)
    # Ray s * d hits |s d - c| = r where s^2 |d|^2 - 2 s d.c + |c|^2 - r^2 = 0.
    a, b, cc = (rays**2).sum(-1), (rays @ c), c @ c - 0.05**2
    disc = b**2 - a * cc
    inside = disc > 0
    s = (b - np.sqrt(np.maximum(disc, 0))) / a
    mask = out.mask_visib(0)
    iou = (mask & inside).sum() / (mask | inside).sum()
    assert iou > 0.97
    both = mask & inside & (disc > 0.2 * disc.max())  # away from the grazing rim
    # The icosphere is inscribed in the sphere: up to ~0.1 mm deeper, never nearer.
    err = out.depth[both] - s[both]
    assert err.min() > -1e-5 and err.max() < 3e-4
    assert (out.depth[~mask] == 0).all()


def test_coordinate_maps_agree_with_the_pose(renderer):
    K = camera()
    rng = np.random.default_rng(0)
    for _ in range(3):
        q = rng.normal(size=4)
        R = trimesh.transformations.quaternion_matrix(q / np.linalg.norm(q))[:3, :3]
        out = renderer.render(K, [Instance("box", R, [0.01, 0.02, 0.5])])
        v, u = np.nonzero(out.mask_visib(0))
        p = out.xyz[v, u].astype(np.float64) @ R.T + [0.01, 0.02, 0.5]
        uv = p @ K.T
        uv = uv[:, :2] / uv[:, 2:]
        # Each pixel shows the surface point on the ray through its centre.
        assert np.abs(uv - np.stack([u, v], 1)).max() < 2e-3
        assert np.abs(p[:, 2] - out.depth[v, u]).max() < 1e-5


def test_projected_vertices_fall_on_mask_and_depth(renderer, objects):
    K = np.array([[572.4, 0, 80.3], [0, 573.6, 60.1], [0, 0, 1]])
    obj = objects[0]
    r = Renderer(W, H)
    r.add_mesh("ape", obj.mesh)
    R = trimesh.transformations.rotation_matrix(0.7, [1, 1, 0])[:3, :3]
    t = np.array([0.0, 0.0, 0.9])
    out = r.render(K, [Instance("ape", R, t)])
    p = np.asarray(obj.mesh.vertices) @ R.T + t
    uv = p @ K.T
    px = np.round(uv[:, :2] / uv[:, 2:]).astype(int)
    full = out.mask_full(0)
    # Silhouette vertices may sit up to half a pixel outside the covered pixel centres.
    grown = cv2.dilate(full.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert grown[px[:, 1], px[:, 0]].all()
    assert full[px[:, 1], px[:, 0]].mean() > 0.9
    # Nothing is rendered behind a vertex: the depth at its pixel is at most its own
    # (plus the surface slope across half a pixel).
    # (plus the surface slope across half a pixel). Pixels at silhouettes and self-occlusion
    # edges may show a surface behind the vertex; away from the outline almost none do.
    depth = out.depth[px[:, 1], px[:, 0]]
    inner = cv2.erode(full.astype(np.uint8), np.ones((5, 5), np.uint8))[px[:, 1], px[:, 0]] > 0
    assert (depth[inner] <= p[inner, 2] + 2e-3).mean() > 0.98
    r.release()


def test_amodal_masks_and_coordinates_under_occlusion(renderer):
    K = camera()
    front = Instance("box", np.eye(3), [0.0, 0.0, 0.4])
    back = Instance("sphere", np.eye(3), [0.03, 0.0, 0.6])
    out = renderer.render(K, [back, front])
    visib, full = out.mask_visib(0), out.mask_full(0)
    assert visib.sum() < full.sum() and not (visib & ~full).any()
    alone = renderer.render(K, [back])
    assert (alone.mask_visib(0) == full).all()
    # Where the occluded object is visible, its amodal map equals what the pixel shows.
    np.testing.assert_allclose(out.xyz_full(0)[visib], out.xyz[visib], atol=1e-6)
    np.testing.assert_allclose(out.xyz_full(0)[full], alone.xyz[full], atol=1e-6)


def test_partly_outside_the_image_and_many_instances(renderer):
    K = camera()
    many = [Instance("sphere", np.eye(3), [x, y, 0.25]) for x in np.linspace(-0.2, 0.2, 5)
            for y in np.linspace(-0.15, 0.15, 4)]
    out = renderer.render(K, many)
    for i, inst in enumerate(many):
        alone = renderer.render(K, [inst])
        assert (out.mask_full(i) == alone.mask_visib(0)).all()


def test_vertex_colours_lighting_and_gain(renderer):
    verts = np.array([[-0.1, -0.1, 0], [0.1, -0.1, 0], [0.1, 0.1, 0], [-0.1, 0.1, 0]])
    mesh = trimesh.Trimesh(verts, [[0, 1, 2], [0, 2, 3]], process=False)
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=[200, 100, 50, 255])
    r = Renderer(W, H)
    r.add_mesh("plate", mesh)
    flat = Lighting(ambient=np.ones(3), directions=np.zeros((0, 3)), colors=np.zeros((0, 3)))
    out = r.render(camera(), [Instance("plate", np.eye(3), [0, 0, 0.5])], flat)
    np.testing.assert_allclose(out.rgb[60, 80], [200, 100, 50], atol=1)
    half = Material(gain=np.array([0.5, 0.5, 0.5]), specular=0.0)
    out = r.render(camera(), [Instance("plate", np.eye(3), [0, 0, 0.5], half)], flat)
    np.testing.assert_allclose(out.rgb[60, 80], [100, 50, 25], atol=1)
    dark = Lighting(ambient=np.zeros(3), directions=np.array([[0.0, 0, 1]]),
                    colors=np.ones((1, 3)))  # light from behind the plate, seen from the front
    lit = Lighting(ambient=np.zeros(3), directions=np.array([[0.0, 0, -1]]),
                   colors=np.ones((1, 3)))
    facing = Instance("plate", np.eye(3), [0, 0, 0.5], Material(specular=0.0))
    np.testing.assert_allclose(r.render(camera(), [facing], lit).rgb[60, 80], [200, 100, 50],
                               atol=1)
    # Two-sided shading: the face towards the camera is lit by a light on the camera side.
    assert r.render(camera(), [facing], dark).rgb[60, 80].sum() < 5
    r.release()


def test_texture_orientation(renderer, tmp_path):
    # A quad textured with a picture whose top half is red, bottom half blue.
    pic = np.zeros((64, 64, 3), np.uint8)
    pic[:32] = [255, 0, 0]
    pic[32:] = [0, 0, 255]
    verts = np.array([[-0.1, -0.1, 0], [0.1, -0.1, 0], [0.1, 0.1, 0], [-0.1, 0.1, 0]])
    # UV origin is the picture's bottom-left; object +y is image-down at R = I.
    uv = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], float)
    mesh = trimesh.Trimesh(verts, [[0, 1, 2], [0, 2, 3]], process=False,
                           visual=trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(pic)))
    r = Renderer(W, H)
    r.add_mesh("quad", mesh)
    flat = Lighting(ambient=np.ones(3), directions=np.zeros((0, 3)), colors=np.zeros((0, 3)))
    out = r.render(camera(), [Instance("quad", np.eye(3), [0, 0, 0.5], Material(specular=0))],
                   flat)
    assert out.rgb[40, 80, 0] > 200 and out.rgb[40, 80, 2] < 50  # top red
    assert out.rgb[80, 80, 2] > 200 and out.rgb[80, 80, 0] < 50  # bottom blue
    r.release()


def test_simplify_keeps_shape_and_colours(objects):
    mesh = objects[1].mesh
    small = simplify_mesh(mesh, 2000)
    assert len(small.faces) <= 2000 < len(mesh.faces)
    assert np.abs(small.bounds - mesh.bounds).max() < 3e-3
    assert small.visual.kind == "vertex"
    assert simplify_mesh(mesh, 0) is mesh


def test_unknown_mesh_key_names_it(renderer):
    with pytest.raises(KeyError, match="teapot"):
        renderer.render(camera(), [Instance("teapot", np.eye(3), [0, 0, 1])])
