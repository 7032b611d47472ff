"""Convolution: the original study's worked example, then edge filters on an MRI slice.

The kernel slides over the image; at each position the output is the sum of the elementwise
product of kernel and patch (cross-correlation, the definition the original study uses). The
study's example convolves a 5 x 5 binary image with a 3 x 3 "X" kernel, giving a 3 x 3 map
that counts how much of the X each patch contains. Hand-designed kernels detect edges: Sobel
kernels respond to horizontal and vertical intensity changes, the Laplacian to both. A CNN
learns its kernels instead of having them designed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..autograd import Tensor
from ..conv import conv2d

STUDY_IMAGE = np.array([[1, 1, 1, 0, 0],
                        [0, 1, 1, 1, 0],
                        [0, 0, 1, 1, 1],
                        [0, 0, 1, 1, 0],
                        [0, 1, 1, 0, 0]], dtype=np.float64)
STUDY_KERNEL = np.array([[1, 0, 1],
                         [0, 1, 0],
                         [1, 0, 1]], dtype=np.float64)
STUDY_RESULT = np.array([[4, 3, 4],
                         [2, 4, 3],
                         [2, 3, 4]], dtype=np.float64)

EDGE_KERNELS = {
    "Sobel x (vertical edges)": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64),
    "Sobel y (horizontal edges)": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float64),
    "Laplacian": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64),
}


def naive_correlate(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The definition, loop by loop (valid positions, stride 1): for checking `conv2d`."""
    kh, kw = kernel.shape
    out = np.zeros((image.shape[0] - kh + 1, image.shape[1] - kw + 1))
    for y in range(out.shape[0]):
        for x in range(out.shape[1]):
            out[y, x] = (image[y : y + kh, x : x + kw] * kernel).sum()
    return out


def filter2d(image: np.ndarray, kernel: np.ndarray, stride: int = 1, padding: int = 0) -> np.ndarray:
    """One gray image, one kernel, through the engine's `conv2d`."""
    return conv2d(Tensor(image[None, None]), Tensor(kernel[None, None]), stride=stride, padding=padding).data[0, 0]


def mri_slice(data: str | Path | None, size: int = 128) -> tuple[np.ndarray, str]:
    """A gray MRI slice in [0, 1] from the dataset, or the Shepp-Logan head phantom if no data
    folder was given and the default one does not exist. An explicit `data` must exist."""
    from braintumor.data.dataset import default_data_dir, scan
    from braintumor.data.imageio import read_image
    from braintumor.data.preprocess import Preprocess

    folder = Path(data) if data is not None else default_data_dir()
    if data is None and not folder.is_dir():
        from skimage.data import shepp_logan_phantom
        from skimage.transform import resize

        return resize(shepp_logan_phantom(), (size, size), anti_aliasing=True), "Shepp-Logan phantom (no MRI data folder found)"
    dataset = scan(folder)
    wanted = [i for i, label in enumerate(dataset.labels) if dataset.classes[label] == "meningioma"]
    path = dataset.paths[wanted[0] if wanted else 0]
    rgb = Preprocess(image_size=size)(read_image(path))
    return rgb.astype(np.float64).mean(axis=2) / 255.0, str(path)


def run(quick: bool = False, data: str | Path | None = None, **_) -> tuple[dict, object]:
    from .common import figure

    result_engine = filter2d(STUDY_IMAGE, STUDY_KERNEL)
    result_loops = naive_correlate(STUDY_IMAGE, STUDY_KERNEL)
    shapes = {
        "stride 1, padding 0": filter2d(STUDY_IMAGE, STUDY_KERNEL).shape,
        "stride 1, padding 1": filter2d(STUDY_IMAGE, STUDY_KERNEL, padding=1).shape,
        "stride 2, padding 1": filter2d(STUDY_IMAGE, STUDY_KERNEL, stride=2, padding=1).shape,
    }
    image, source = mri_slice(data, 96 if quick else 192)
    responses = {name: filter2d(image, k, padding=1) for name, k in EDGE_KERNELS.items()}
    sx, sy = responses["Sobel x (vertical edges)"], responses["Sobel y (horizontal edges)"]
    magnitude = np.hypot(sx, sy)

    fig, axes = figure(4, 2, size=(3.0, 3.0))
    for ax, (title, m) in zip(axes[:3], (("image", STUDY_IMAGE), ("kernel", STUDY_KERNEL), ("image ⊛ kernel", result_engine))):
        ax.imshow(m, cmap="Blues", vmin=0, vmax=max(1, m.max()))
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="w" if v > m.max() / 2 else "k")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[3].axis("off")
    axes[3].text(0, 0.5, "output size, 5x5 image\nand 3x3 kernel:\n" + "\n".join(f"{k}: {v[0]}x{v[1]}" for k, v in shapes.items()),
                 fontsize=9, va="center")
    panels = [("MRI slice" if "phantom" not in source else "phantom", image), ("Sobel x (vertical edges)", sx),
              ("gradient magnitude |Sobel|", magnitude), ("Laplacian", responses["Laplacian"])]
    for ax, (title, m) in zip(axes[4:], panels):
        ax.imshow(m, cmap="gray")
        ax.set_title(title, fontsize=9)
        ax.axis("off")

    result = {
        "study_image": STUDY_IMAGE.astype(int).tolist(),
        "study_kernel": STUDY_KERNEL.astype(int).tolist(),
        "result": result_engine.tolist(),
        "matches_original_study": bool(np.array_equal(result_engine, STUDY_RESULT)),
        "matches_naive_loops": bool(np.allclose(result_engine, result_loops)),
        "output_shapes": {k: list(v) for k, v in shapes.items()},
        "mri_source": source,
        "edge_energy": {name: float(np.mean(r**2)) for name, r in responses.items()},
        "finding": (
            f"the 5x5 image ⊛ [[1,0,1],[0,1,0],[1,0,1]] = {result_engine.astype(int).tolist()}, "
            f"{'as in' if np.array_equal(result_engine, STUDY_RESULT) else 'NOT as in'} the original study "
            f"(and as the loop-by-loop definition); Sobel and Laplacian kernels outline the skull and tissue boundaries of {Path(source).name}"
        ),
    }
    return result, fig
