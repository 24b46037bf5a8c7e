"""The NeRF backbone: the render contract, its hash-grid maths, regularisers, schedules, export, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
from nerfstudio.field_components.encodings import HashEncoding

from lods.backbones.mesh import extract_mesh, write_mesh
from lods.backbones.nerf import REGULARIZERS, HashGrid, NeRFBackbone
from lods.cameras import orbit_cameras
from tests.tolerances import assert_network_close

SIZE = 16
TINY = dict(
    num_levels=4,
    log2_hashmap_size=10,
    min_grid_resolution=4,
    max_grid_resolution=32,
    hidden_dim=16,
    num_coarse_samples=24,
    num_fine_samples=8,
    occupancy_resolution=8,
    mesh_resolution=24,
    orientation_reg=0.0,  # the defaults are set for SDS; tests switch regularisers on where they need them
    sparsity_reg=0.0,
)
RECONSTRUCTION = ["orientation_reg=0", "sparsity_reg=0", "lr_heads=1e-2"]  # fitting to images, not SDS


def make(seed: int = 0, **overrides) -> NeRFBackbone:
    backbone = NeRFBackbone(**{**TINY, **overrides})
    backbone.setup(None, None, torch.Generator().manual_seed(seed))
    return backbone


def cameras(n: int = 2, size: int = SIZE, distance: float = 3.0):
    return orbit_cameras(torch.linspace(0, 270, n), 15.0, distance, 45.0, size, size)


def test_evaluation_in_ray_chunks_equals_one_pass(monkeypatch):
    """Without gradient, rays are marched in chunks (full-size evaluation); each ray's samples are the same,
    only the field's batched matrix products see other batch sizes (tolerance: tests/tolerances.py)."""
    import lods.backbones.nerf as nerf_module

    backbone = make(shading="lambertian")  # the light of each ray's image must follow it into its chunk
    cams = cameras(3)
    whole = backbone.evaluate(cams)
    monkeypatch.setattr(nerf_module, "EVAL_RAY_CHUNK", 100)  # chunks that straddle images
    chunked = backbone.evaluate(cams)
    for a, b in ((chunked.rgb, whole.rgb), (chunked.alpha, whole.alpha), (chunked.depth, whole.depth)):
        assert_network_close(a, b)
    assert (whole.alpha > 0.5).any()


def test_render_shapes_and_ranges():
    backbone = make()
    out = backbone.render(cameras(2), step=0)
    assert out.rgb.shape == (2, 3, SIZE, SIZE) and out.alpha.shape == (2, 1, SIZE, SIZE)
    assert out.depth.shape == (2, 1, SIZE, SIZE) and out.normal.shape == (2, 3, SIZE, SIZE)
    assert out.rgb.min() >= 0 and out.rgb.max() <= 1 + 1e-6
    assert out.alpha.min() >= 0 and out.alpha.max() <= 1 + 1e-6
    hit = out.alpha > 0.5
    assert hit.any() and (out.depth[hit] > 1.5).all() and (out.depth[hit] < 3.5).all()  # the blob, from distance 3
    assert (out.depth[out.alpha == 0] == 0).all()
    # Empty pixels show the background (white by default).
    empty = (out.alpha == 0).expand_as(out.rgb)
    assert torch.allclose(out.rgb[empty], torch.ones(()))
    assert backbone.images(None, cameras(1)).shape == (1, 3, SIZE, SIZE)


def test_gradients_reach_every_group():
    backbone = make(orientation_reg=0.1, view_dependent=True)
    out = backbone.render(cameras(1), step=0)
    loss = (out.rgb - 0.3).square().mean() + sum(backbone.regularizers(out, 0).values())
    loss.backward()
    groups = {g["name"]: g for g in backbone.param_groups()}
    assert set(groups) == {"encoding", "heads"}  # background only when learned
    assert groups["encoding"]["lr"] == 1e-2 and groups["heads"]["lr"] == 1e-3
    for group in groups.values():
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in group["params"])
        assert any(p.grad.abs().sum() > 0 for p in group["params"])
    learned = make(background="learned")
    assert {g["name"] for g in learned.param_groups()} == {"encoding", "heads", "background"}


def test_blob_initialisation():
    """Magic3D's blob: opaque through the centre of the box, empty towards its corners."""
    backbone = make()
    backbone.eval()
    out = backbone.render(cameras(1, size=32), step=None)
    assert out.alpha[0, 0, 16, 16] > 0.99
    for y, x in ((0, 0), (0, 31), (31, 0), (31, 31)):
        assert out.alpha[0, 0, y, x] < 0.01
    assert backbone.density(torch.zeros(1, 3)) > 5
    assert backbone.density(torch.full((1, 3), 0.9)) < 1e-3
    # Without a blob (and a negative bias) the box starts empty: the occupancy grid then covers the whole box.
    with pytest.warns(UserWarning, match="occupancy grid is empty"):
        empty = make(blob_density=0.0, density_bias=-5.0)
    assert empty.density(torch.zeros(1, 3)) < 0.05
    assert empty.occupancy_mask.all()


def test_the_halo_raises_the_faint_start_to_its_density_within_its_radius():
    """A floor under the blob (halo_density, out to halo_radius): the backdrop's cells start occupied."""
    plain, halo = make(), make(halo_density=0.3, halo_radius=0.9)
    x = torch.tensor([[0.0, 0.0, 0.0], [0.7, 0.0, 0.0], [0.0, -0.5, 0.6], [0.9, 0.9, 0.0]])
    blob = plain.blob_density * (1 - x.norm(dim=-1) / plain.blob_radius)
    expected = plain.density(x) * torch.where(blob < math.log(0.3), 0.3 / blob.exp(), torch.ones(()))
    expected[3] = plain.density(x[3:])  # beyond halo_radius (|x| = 1.27): the blob alone
    torch.testing.assert_close(halo.density(x), expected, rtol=1e-5, atol=0)
    assert (blob[1:3] < math.log(0.3)).all()  # the two points the floor lifts
    assert halo.occupancy_mask.sum() > plain.occupancy_mask.sum()
    with pytest.raises(ValueError, match="halo_density"):
        make(halo_density=-1.0)


def test_the_halo_fades_geometrically_and_its_empty_shell_leaves_the_occupancy_grid():
    """halo_fade_steps [start, end]: the floor's density goes from halo_density to halo_final_density, geometric
    in between, following the occupancy grid's step; at the end the untouched shell (0.01 < threshold 0.1) is
    no longer occupied, so it costs no samples; the grid state (its step) carries the floor through a resume."""
    fading = make(halo_density=0.4, halo_radius=0.9, halo_fade_steps=[100, 300], halo_final_density=0.01)
    assert [fading.halo_at(s) for s in (0, 100, 300, 1000)] == [0.4, 0.4, pytest.approx(0.01), pytest.approx(0.01)]
    assert fading.halo_at(200) == pytest.approx(math.sqrt(0.4 * 0.01))  # halfway: the geometric mean
    plain = make()
    shell = torch.tensor([[0.85, 0.0, 0.0], [0.0, -0.5, 0.6]])  # where the blob alone is below every floor
    blob = plain.blob_density * (1 - shell.norm(dim=-1) / plain.blob_radius)
    assert (blob < math.log(0.01)).all()
    density = plain.density(shell) / blob.exp()  # exp(field head) at these points
    start_occupied = fading.occupancy_mask.sum()
    torch.testing.assert_close(fading.density(shell), 0.4 * density, rtol=1e-5, atol=0)
    fading.update_occupancy(step=200)
    torch.testing.assert_close(fading.density(shell), math.sqrt(0.4 * 0.01) * density, rtol=1e-5, atol=0)
    fading.update_occupancy(step=300, decay=0.0)
    torch.testing.assert_close(fading.density(shell), 0.01 * density, rtol=1e-5, atol=0)
    assert fading.occupancy_mask.sum() < start_occupied
    resumed = make(halo_density=0.4, halo_radius=0.9, halo_fade_steps=[100, 300], halo_final_density=0.01)
    resumed.load_state_dict(fading.state_dict())
    torch.testing.assert_close(resumed.density(shell), fading.density(shell), rtol=0, atol=0)
    assert make(halo_density=0.4, halo_fade_steps=None).halo_at(10**6) == 0.4  # no fade: it stays
    for bad in ([300, 100], [5], "soon"):
        with pytest.raises(ValueError, match="halo_fade_steps"):
            make(halo_density=0.4, halo_fade_steps=bad)
    with pytest.raises(ValueError, match="halo_final_density"):
        make(halo_density=0.4, halo_fade_steps=[0, 10], halo_final_density=0.0)


def test_determinism_with_a_seeded_generator():
    def run(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(seed + 123)  # the global RNG must not matter
        backbone = make(seed, background="random")
        backbone.train()
        optimizer = torch.optim.Adam(backbone.param_groups())
        for step in range(2):
            out = backbone.render(cameras(2), step)
            optimizer.zero_grad()
            (out.rgb - 0.5).square().mean().backward()
            optimizer.step()
        return out.rgb.detach(), backbone.encoding.hash_table.detach().clone()

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_regularisers_finite_and_off_at_zero_weight():
    backbone = make()
    out = backbone.render(cameras(2), step=0)
    assert backbone.regularizers(out, 0) == {}
    weights = {f"{name}_reg": 0.1 for name in REGULARIZERS}
    backbone = make(**weights)
    out = backbone.render(cameras(2), step=0)
    losses = backbone.regularizers(out, 0)
    assert set(losses) == set(REGULARIZERS)
    for name, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value), name
    sum(losses.values()).backward()
    assert torch.isfinite(backbone.encoding.hash_table.grad).all()
    # The blob is a sphere: a convex surface, outward normals.
    assert losses["convexity"] < 0
    assert losses["orientation"] < 1e-3
    assert float(losses["sparsity"].detach()) == pytest.approx(0.1 * float(out.alpha.detach().mean()))


def test_convexity_loss_sign():
    """SDI's convexity term is negative on a convex (sphere-like) normal map and positive on a concave one."""
    cams = orbit_cameras(40.0, 20.0, 3.0, 45.0, SIZE, SIZE)
    ys, xs = torch.meshgrid(torch.linspace(0.7, -0.7, SIZE), torch.linspace(-0.7, 0.7, SIZE), indexing="ij")
    z = (1 - xs**2 - ys**2).clamp_min(0).sqrt()
    rotation = cams.c2w[0, :3, :3]
    losses = {}
    for name, sign in (("convex", 1.0), ("concave", -1.0)):
        camera_normals = torch.stack([sign * xs, sign * ys, z])  # x right, y up, z towards the camera
        world = torch.einsum("ij,jhw->ihw", rotation, camera_normals)[None]
        extras = {"normal_render": world, "alpha_render": torch.ones(1, 1, SIZE, SIZE), "c2w": cams.c2w}
        losses[name] = float(NeRFBackbone._convexity_loss(None, extras))
    assert losses["convex"] < -0.01 and losses["concave"] > 0.01
    assert losses["convex"] == pytest.approx(-losses["concave"])


def test_regulariser_schedules_switch_at_their_steps():
    backbone = make(convexity_reg=0.1, convexity_reg_steps=[2, 5], sparsity_reg=1.0, sparsity_reg_steps=[3, None])
    out = backbone.render(cameras(1), step=0)
    active = {step: {k for k, v in backbone.regularizers(out, step).items() if v != 0} for step in range(7)}
    assert active == {
        0: set(),
        1: set(),
        2: {"convexity"},
        3: {"convexity", "sparsity"},
        4: {"convexity", "sparsity"},
        5: {"sparsity"},
        6: {"sparsity"},
    }
    assert set(backbone.regularizers(out, None)) == {"convexity", "sparsity"}  # no step: always on


def test_progressive_resolution():
    backbone = make(resolution_schedule=[[0, 8], [3, 12], [6, 16]])
    cams = cameras(1)
    for step, internal in ((0, 8), (2, 8), (3, 12), (5, 12), (6, 16), (100, 16), (None, 16)):
        assert backbone.render_size(step, SIZE, SIZE) == (internal, internal)
        out = backbone.render(cams, step)
        assert out.rgb.shape == (1, 3, SIZE, SIZE) and out.alpha.shape == (1, 1, SIZE, SIZE)
        assert out.normal.shape == (1, 3, SIZE, SIZE)
        assert out.extras["render_size"] == (internal, internal)
    # Wide images keep their aspect ratio.
    wide = orbit_cameras(0.0, 0.0, 3.0, 45.0, 24, 12)
    assert backbone.render_size(0, 12, 24) == (8, 16)
    assert backbone.render(wide, 0).rgb.shape == (1, 3, 12, 24)


def test_normals_unit_length_where_opaque_and_outward():
    backbone = make()
    backbone.eval()
    cams = cameras(2)
    out = backbone.render(cams, None)
    norm = out.normal.norm(dim=1)
    solid = out.alpha[:, 0] > 0.5
    assert solid.sum() > 10
    assert torch.allclose(norm[solid], torch.ones(()), atol=1e-4)
    assert (norm[out.alpha[:, 0] == 0] == 0).all()
    # The blob's normals face the camera.
    to_camera = torch.nn.functional.normalize(cams.c2w[:, :3, 3], dim=-1)
    facing = (out.normal * to_camera[:, :, None, None]).sum(1)
    assert (facing[solid] > 0).float().mean() > 0.95


@pytest.mark.parametrize("halo_density", [0.0, 1.0])
def test_analytic_normals_match_finite_differences(halo_density):
    backbone = make(blob_density=4.0, halo_density=halo_density)  # halo 1: the floor from |x| = 0.5 outwards
    with torch.no_grad():  # a field with structure beyond the blob
        backbone.encoding.hash_table.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
    points = (torch.rand(200, 3, generator=torch.Generator().manual_seed(4)) - 0.5) * 1.2
    _, _, analytic = backbone.field(points)
    backbone.normals, backbone.fd_eps = "finite_difference", 1e-4
    _, _, numeric = backbone.field(points)
    cos = (analytic * numeric).sum(-1)
    assert (cos > 0.99).float().mean() > 0.95  # a few points may sit on a cell face, where the gradient jumps


def test_hash_grid_matches_nerfstudio():
    """The fast PyTorch path: nerfstudio's table, hash and interpolation; the exact Jacobian; its table gradient."""
    torch.manual_seed(0)
    grid = HashGrid(num_levels=3, min_res=4, max_res=16, log2_hashmap_size=8, implementation="torch").double()
    with torch.no_grad():
        grid.hash_table.normal_()
    x = torch.rand(64, 3, dtype=torch.float64) * 0.98 + 0.01
    value, jac = grid.forward_with_jacobian(x)
    assert torch.allclose(value, HashEncoding.pytorch_fwd(grid, x), atol=1e-12)
    xr = x.clone().requires_grad_()
    reference = HashEncoding.pytorch_fwd(grid, xr)
    jac_ref = torch.stack(
        [torch.autograd.grad(reference[:, k].sum(), xr, create_graph=True)[0] for k in range(reference.shape[1])], -1
    )
    assert torch.allclose(jac, jac_ref, atol=1e-10)
    r1, r2 = torch.randn_like(value), torch.randn_like(jac)
    ours = torch.autograd.grad((value * r1).sum() + (jac * r2).sum(), grid.hash_table)[0]
    theirs = torch.autograd.grad((reference * r1).sum() + (jac_ref * r2).sum(), grid.hash_table)[0]
    assert torch.allclose(ours, theirs, atol=1e-10)


def test_export_writes_meshes_inside_the_bound(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    backbone = make(mesh_threshold=1.0)
    paths = backbone.export(tmp_path)
    assert [p.suffix for p in paths] == [".obj", ".glb"] and all(p.is_file() for p in paths)
    for path in paths:
        mesh = trimesh.load(path, force="mesh")
        assert len(mesh.vertices) > 100 and len(mesh.faces) > 100
        assert mesh.vertices.__abs__().max() <= backbone.radius + 1e-5
        radius = (mesh.vertices**2).sum(-1) ** 0.5  # the blob's density-1 surface: |x| = blob_radius = 0.5
        assert 0.35 < radius.mean() < 0.55
    obj = trimesh.load(paths[0], force="mesh", process=False)
    assert obj.visual.vertex_colors.shape[0] == len(obj.vertices)


def test_export_without_a_surface_warns(tmp_path):
    backbone = make(mesh_threshold=1e6)
    with pytest.warns(UserWarning, match="no surface"):
        assert backbone.export(tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_extract_mesh_sphere_and_colours(tmp_path):
    """extract_mesh on an analytic field: a sphere of radius 0.5, coloured by the normals it is given."""
    mesh = extract_mesh(
        lambda p: 1 - p.norm(dim=-1),
        lambda p, n: n * 0.5 + 0.5,
        bound=1.0,
        resolution=32,
        threshold=0.5,
        chunk=1000,
    )
    vertices, faces, colors = mesh
    assert abs(float((vertices**2).sum(-1).mean() ** 0.5) - 0.5) < 0.02
    normals_back = colors * 2 - 1  # outward normals: parallel to the position on a sphere
    cos = (normals_back * vertices).sum(-1) / (abs(vertices**2).sum(-1) ** 0.5)
    assert (cos > 0.9).mean() > 0.99
    paths = write_mesh(vertices, faces, colors, tmp_path / "out", "sphere")
    assert [p.name for p in paths] == ["sphere.obj", "sphere.glb"]


def test_state_dict_round_trip_renders_identically():
    a = make(seed=0)
    a.train()
    optimizer = torch.optim.Adam(a.param_groups())
    for step in range(20):  # past an occupancy update (every 16 steps)
        out = a.render(cameras(1), step)
        optimizer.zero_grad()
        (out.rgb - 0.2).square().mean().backward()
        optimizer.step()
    assert int(a.occupancy_step) == 16
    b = make(seed=1)
    b.load_state_dict(a.state_dict())
    a.eval()
    b.eval()
    assert torch.equal(a.render(cameras(2), None).rgb, b.render(cameras(2), None).rgb)
    assert torch.equal(a.occupancy_mask, b.occupancy_mask)


def test_occupancy_grid_skips_empty_space():
    backbone = make(blob_density=10.0, blob_radius=0.3)
    out = backbone.render(cameras(1, size=32), 0)
    assert 0 < backbone.occupancy_mask.float().mean() < 0.5
    assert 0 < out.extras["rays"] < 32 * 32 / 2  # rays through empty cells never reach the field
    # Far off-centre cameras: rays that miss the box are empty.
    miss = orbit_cameras(0.0, 0.0, 3.0, 10.0, 8, 8)
    miss.c2w[:, 1, 3] += 5.0
    out = backbone.render(miss, 0)
    assert out.extras["rays"] == 0 and (out.alpha == 0).all() and (out.rgb == 1).all()


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("density_activation", "relu", "softplus, trunc_exp"),
        ("normals", "autograd", "analytic, finite_difference, none"),
        ("shading", "phong", "none, lambertian"),
        ("implementation", "cuda", "auto, torch, tcnn"),
        ("background", "grey", "white, black, random, learned"),
    ],
)
def test_unknown_choices_name_the_allowed_values(key, value, allowed):
    with pytest.raises(ValueError, match=f"'{value}'.*{allowed}"):
        NeRFBackbone(**{key: value})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"resolution_schedule": [[10, 32]]}, "must start at step 0"),
        ({"resolution_schedule": [[0, 32], [0, 64]]}, "increase strictly"),
        ({"resolution_schedule": [[0, 0]]}, ">= 1"),
        ({"resolution_schedule": [32, 64]}, r"list of \[step, resolution\] pairs"),
        ({"sparsity_reg_steps": [10, 5]}, r"sparsity_reg_steps must be \[start, end\]"),
        ({"orientation_reg": -1.0}, "orientation_reg must be >= 0"),
        ({"radius": 0.0}, "radius must be > 0"),
        ({"num_fine_samples": 0}, "num_fine_samples must be an integer >= 1"),
        ({"normals": "none", "orientation_reg": 0.1}, "orientation needs them"),
        ({"normals": "none", "shading": "lambertian"}, "shading needs them"),
    ],
)
def test_bad_values_raise(overrides, message):
    with pytest.raises(ValueError, match=message):
        NeRFBackbone(**overrides)


def test_softplus_and_lambertian_shading_render():
    backbone = make(density_activation="softplus", shading="lambertian", shading_prob=1.0)
    out = backbone.render(cameras(2), 0)
    assert torch.isfinite(out.rgb).all() and out.rgb.shape == (2, 3, SIZE, SIZE)
    out.rgb.mean().backward()
    assert torch.isfinite(backbone.encoding.hash_table.grad).all()


def test_config_file_builds_the_default_backbone():
    from lods.eval.reconstruction import build_backbone

    backbone = build_backbone("nerf")
    assert isinstance(backbone, NeRFBackbone)
    assert backbone.schedule is None and backbone.radius == 1.0 and backbone.density_activation == "trunc_exp"
    assert backbone.reg_weights["orientation"] > 0 and backbone.reg_weights["sparsity"] > 0  # SDS defaults
    assert backbone.reg_weights["convexity"] == 0 and backbone.reg_steps["convexity"] == (0, 400)
    built = build_backbone("nerf", ["resolution_schedule=[[0,32],[100,64]]", "sparsity_reg_steps=[0,100]"])
    assert built.schedule == [(0, 32), (100, 64)] and built.reg_steps["sparsity"] == (0, 100)


@pytest.mark.slow
def test_reconstruction_reaches_psnr():
    """Fit "a red cube" from 48 posed ground-truth views (no prior), held-out PSNR on the evaluation orbit.

    With the reconstruction overrides (no SDS regularisers, heads at lr 1e-2), 60 steps of 2 views reached
    29.0 dB held out (27 s on 2 cores), 5 dB above the 24 dB asserted here. The full check, ``python -m
    lods.eval.reconstruction --backbone nerf --caption "a red cube" --steps 200 orientation_reg=0
    sparsity_reg=0 lr_heads=1e-2``, reached 32.5 dB (target 28).
    """
    from lods.eval.reconstruction import build_backbone, fit

    result = fit(build_backbone("nerf", RECONSTRUCTION), "a red cube", steps=60, batch_size=2)
    assert result["psnr_heldout"] > 24.0
