"""PLY files: the standard 3D Gaussian Splatting layout (write and read) and plain point clouds (read).

``write_gaussians_ply`` writes what the original 3DGS code (``GaussianModel.save_ply``) writes and what
3DGS viewers read: one ``vertex`` element, binary little-endian float32 properties

    x y z nx ny nz f_dc_0..2 f_rest_0..(3K-1) opacity scale_0..2 rot_0..3

with the raw (pre-activation) values: opacity as a logit, scales as logs, the rotation as a wxyz
quaternion (not necessarily normalised), normals zero. The SH coefficients are stored channel-major, as
3DGS does (``features.transpose(1, 2).flatten(1)``): ``f_dc_c`` is the DC coefficient of channel c, and
``f_rest_{c * K + k}`` is coefficient ``k + 1`` of channel c, with K = (degree + 1)^2 - 1 rest coefficients.

``read_ply`` reads the vertex element of any ASCII or binary PLY (a point cloud from Shap-E, Open3D,
MeshLab, ...) into ``{property name: array}``; ``read_point_cloud`` takes positions and, when present,
colours from it (``red green blue`` as uchar 0..255 or as floats in [0, 1]).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

# PLY scalar types -> numpy dtypes (both the PLY 1.0 names and the sized aliases).
_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}
_FORMATS = ("ascii", "binary_little_endian", "binary_big_endian")


def gaussian_property_names(num_rest: int) -> list[str]:
    """The 3DGS vertex properties for ``num_rest`` = 3 * ((degree + 1)^2 - 1) rest coefficients."""
    return [
        *("x", "y", "z", "nx", "ny", "nz"),
        *(f"f_dc_{i}" for i in range(3)),
        *(f"f_rest_{i}" for i in range(num_rest)),
        "opacity",
        *(f"scale_{i}" for i in range(3)),
        *(f"rot_{i}" for i in range(4)),
    ]


def write_gaussians_ply(
    path: str | Path,
    means: Tensor,  # [N, 3]
    sh0: Tensor,  # [N, 1, 3] DC coefficients
    shN: Tensor,  # [N, K, 3] higher-band coefficients (K may be 0)
    opacities: Tensor,  # [N] logits
    scales: Tensor,  # [N, 3] log-scales
    quats: Tensor,  # [N, 4] wxyz
) -> Path:
    """Write Gaussians in the standard 3DGS .ply layout (see the module docstring); returns the path."""
    N = means.shape[0]
    expected = {
        "means": (means, (N, 3)),
        "sh0": (sh0, (N, 1, 3)),
        "opacities": (opacities, (N,)),
        "scales": (scales, (N, 3)),
        "quats": (quats, (N, 4)),
    }
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape {list(shape)}, got {list(tensor.shape)}")
    if shN.dim() != 3 or shN.shape[0] != N or shN.shape[2] != 3:
        raise ValueError(f"shN must have shape [N, K, 3] with N = {N}, got {list(shN.shape)}")

    def columns(x: Tensor) -> np.ndarray:
        return x.detach().to("cpu", torch.float32).reshape(N, -1).numpy()

    data = np.concatenate(
        [
            columns(means),
            np.zeros((N, 3), np.float32),  # normals
            columns(sh0.transpose(1, 2)),  # channel-major, as 3DGS writes them
            columns(shN.transpose(1, 2)),
            columns(opacities),
            columns(scales),
            columns(quats),
        ],
        axis=1,
    ).astype("<f4")
    names = gaussian_property_names(3 * shN.shape[1])
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {N}"]
    header += [f"property float {name}" for name in names]
    header += ["end_header"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(np.ascontiguousarray(data).tobytes())
    return path


def read_gaussians_ply(path: str | Path) -> dict[str, Tensor]:
    """Read a 3DGS .ply into ``means, sh0, shN, opacities, scales, quats`` (raw values, as written)."""
    vertex = read_ply(path)
    names = set(vertex)
    needed = {"x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", *(f"scale_{i}" for i in range(3))}
    needed |= {f"rot_{i}" for i in range(4)}
    missing = sorted(needed - names)
    if missing:
        raise ValueError(f"{path} is not a 3D Gaussian Splatting .ply: missing properties {', '.join(missing)}")
    num_rest = sum(1 for name in names if name.startswith("f_rest_"))
    if num_rest % 3 or num_rest // 3 + 1 not in (1, 4, 9, 16):
        raise ValueError(f"{path}: {num_rest} f_rest_* properties is not 3 * ((degree + 1)^2 - 1) for a degree 0..3")

    def stack(keys: list[str]) -> Tensor:
        return torch.from_numpy(np.stack([np.asarray(vertex[k], np.float32) for k in keys], axis=-1))

    N, K = len(vertex["x"]), num_rest // 3
    rest = stack([f"f_rest_{i}" for i in range(num_rest)]) if num_rest else torch.zeros(N, 0)
    return {
        "means": stack(["x", "y", "z"]),
        "sh0": stack([f"f_dc_{i}" for i in range(3)]).reshape(N, 3, 1).transpose(1, 2).contiguous(),
        "shN": rest.reshape(N, 3, K).transpose(1, 2).contiguous(),
        "opacities": stack(["opacity"])[:, 0],
        "scales": stack([f"scale_{i}" for i in range(3)]),
        "quats": stack([f"rot_{i}" for i in range(4)]),
    }


def read_point_cloud(path: str | Path) -> tuple[Tensor, Tensor | None]:
    """Positions [N, 3] and colours [N, 3] in [0, 1] (None when the file has none) of a .ply point cloud."""
    vertex = read_ply(path)
    missing = [k for k in ("x", "y", "z") if k not in vertex]
    if missing:
        raise ValueError(f"{path}: the vertex element has no {', '.join(missing)} property")
    positions = torch.from_numpy(np.stack([vertex[k] for k in ("x", "y", "z")], -1).astype(np.float32))
    colours = None
    if all(k in vertex for k in ("red", "green", "blue")):
        rgb = np.stack([vertex[k] for k in ("red", "green", "blue")], -1)
        scale = 255.0 if np.issubdtype(rgb.dtype, np.integer) else 1.0
        colours = torch.from_numpy((rgb.astype(np.float32) / scale).clip(0, 1))
    return positions, colours


def read_ply(path: str | Path) -> dict[str, np.ndarray]:
    """The ``vertex`` element of a PLY file (ASCII or binary) as ``{property name: [N] array}``.

    Elements before ``vertex`` are skipped (in binary files only when they have no list properties);
    list properties of the vertex element itself are not supported.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such .ply file: {path}")
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise ValueError(f"{path} is not a PLY file (it does not start with 'ply')")
        fmt, elements = None, []  # elements: [name, count, [(property, dtype or None for lists)]]
        while True:
            line = f.readline()
            if not line:
                raise ValueError(f"{path}: the header has no end_header line")
            words = line.decode("ascii", errors="replace").split()
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "end_header":
                break
            if words[0] == "format":
                fmt = words[1]
                if fmt not in _FORMATS:
                    raise ValueError(f"{path}: unknown PLY format '{fmt}'; choose one of: {', '.join(_FORMATS)}")
            elif words[0] == "element":
                elements.append([words[1], int(words[2]), []])
            elif words[0] == "property":
                if not elements:
                    raise ValueError(f"{path}: a property before any element")
                if words[1] == "list":
                    elements[-1][2].append((words[-1], None))
                else:
                    if words[1] not in _PLY_TYPES:
                        raise ValueError(f"{path}: unknown property type '{words[1]}'")
                    elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
        if fmt is None:
            raise ValueError(f"{path}: the header has no format line")
        body = f.read()

    byte_order = {"binary_little_endian": "<", "binary_big_endian": ">"}.get(fmt, "=")
    offset = 0  # bytes (binary) or lines (ascii) of the elements before the vertex element
    lines = body.decode("ascii", errors="replace").splitlines() if fmt == "ascii" else None
    for name, count, properties in elements:
        if name == "vertex":
            if any(dtype is None for _, dtype in properties):
                raise ValueError(f"{path}: list properties in the vertex element are not supported")
            dtype = np.dtype([(p, byte_order + t) for p, t in properties])
            if fmt == "ascii":
                rows = [row.split() for row in lines[offset : offset + count]]
                if len(rows) < count or any(len(row) < len(properties) for row in rows):
                    raise ValueError(f"{path}: the file ends before its {count} vertices")
                table = np.array(
                    [tuple(row[: len(properties)]) for row in rows], dtype=[(p, "U32") for p, _ in properties]
                )
                return {p: table[p].astype(t) for p, t in properties}
            if len(body) < offset + count * dtype.itemsize:
                raise ValueError(f"{path}: the file ends before its {count} vertices")
            table = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
            native = "<" if sys.byteorder == "little" else ">"
            return {p: table[p].astype(np.dtype(native + t)) for p, t in properties}
        if fmt == "ascii":
            offset += count
        elif any(dtype is None for _, dtype in properties):
            raise ValueError(f"{path}: cannot skip element '{name}' (list properties) before the vertex element")
        else:
            offset += count * np.dtype([(p, byte_order + t) for p, t in properties]).itemsize
    raise ValueError(f"{path} has no vertex element")
