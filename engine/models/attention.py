"""Reusable attention and convolution blocks of EMR-HRNet (Sensors 2024), each usable on its own.

- `EMA`: Efficient Multi-Scale Attention (Ouyang et al., ICASSP 2023), the attention inside DEMA.
- `DEMA`: dilated 3×3 conv → EMA, plus the input as a residual (paper §2.5).
- `RefConv`: re-parameterised refocusing convolution (Cai et al., 2023): a frozen base kernel refined
  by a learnable conv over that kernel; folds into a plain `nn.Conv2d` for inference.
- `MDTA`: Restormer's multi-Dconv head transposed attention (Zamir et al., CVPR 2022).
- `RAD`: two RefConv-BN-ReLU units then a pre-norm residual MDTA (paper §2.4, Fig. 5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class EMA(nn.Module):
    """Efficient Multi-Scale Attention: per-group spatial weights from two branches that score each other.

    Channels are split into `groups` sub-features folded into the batch, so every weight below is shared
    by all groups and the module stays tiny. The 1×1 branch gates the features with directional (H and W)
    pooled descriptors; the 3×3 branch adds local context; each branch's softmax-pooled channel descriptor
    is matched (matmul) against the other branch's pixels, and the sum becomes a sigmoid pixel weight.
    """

    def __init__(self, channels: int, groups: int = 8):
        super().__init__()
        channels, groups = positive_int("channels", channels), positive_int("groups", groups)
        if channels % groups:
            raise ValueError(f"EMA groups ({groups}) must divide the channel count ({channels})")
        self.groups = groups
        sub = channels // groups
        self.conv1x1 = nn.Conv2d(sub, sub, 1)
        self.conv3x3 = nn.Conv2d(sub, sub, 3, padding=1)
        # One group per channel: normalises each sub-feature map over space, as the EMA paper does.
        self.norm = nn.GroupNorm(sub, sub)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = x.reshape(n * self.groups, c // self.groups, h, w)
        along_h = g.mean(dim=3, keepdim=True)  # (nG, c/G, H, 1)
        along_w = g.mean(dim=2, keepdim=True).transpose(2, 3)  # (nG, c/G, W, 1)
        mixed = self.conv1x1(torch.cat([along_h, along_w], dim=2))  # one shared 1×1 conv for both
        gate_h, gate_w = mixed.split([h, w], dim=2)
        branch1 = self.norm(g * gate_h.sigmoid() * gate_w.transpose(2, 3).sigmoid())
        branch3 = self.conv3x3(g)
        # Cross-spatial learning: a softmax over channels of one branch's global descriptor weighs the other.
        desc1 = branch1.mean(dim=(2, 3)).softmax(dim=-1).unsqueeze(1)  # (nG, 1, c/G)
        desc3 = branch3.mean(dim=(2, 3)).softmax(dim=-1).unsqueeze(1)
        weights = desc1 @ branch3.flatten(2) + desc3 @ branch1.flatten(2)  # (nG, 1, H·W)
        return (g * weights.reshape(-1, 1, h, w).sigmoid()).reshape(n, c, h, w)


class DEMA(nn.Module):
    """Dilated conv + EMA + residual: a drop-in for a stride-1 3×3 conv with equal in/out channels.

    The dilation widens the receptive field of the shallow, high-resolution branches at no parameter
    cost; the residual carries the undilated input so the sparse sampling grid cannot leave holes.
    """

    def __init__(self, channels: int, dilation: int = 2, groups: int = 8):
        super().__init__()
        dilation = positive_int("dilation", dilation)
        self.conv = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.ema = EMA(channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ema(self.conv(x))


class RefConv(nn.Module):
    """A convolution whose kernel is a frozen base plus a learned refocusing of that base.

    The base kernel (a buffer, so optimisers never see it and checkpoints keep it) is viewed as a
    one-image batch with C_out·C_in/g channels of K×K pixels; a grouped `map_k`×`map_k` conv over it
    (the refocusing transform, G = C_out·C_in/g² groups of g kernels) learns how kernels should borrow
    from their neighbours. The transform starts at zero so training begins from the base conv. Only the
    transform trains; `reparameterize()` bakes the sum into an ordinary conv for inference.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        map_k: int = 3,
    ):
        super().__init__()
        sizes = {"in_channels": in_channels, "out_channels": out_channels, "kernel_size": kernel_size}
        sizes |= {"stride": stride, "dilation": dilation, "groups": groups, "map_k": map_k}
        for name, value in sizes.items():
            positive_int(name, value)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups ({groups}) must divide in ({in_channels}) and out ({out_channels}) channels"
            )
        if map_k > kernel_size or map_k % 2 == 0:
            raise ValueError(f"map_k must be odd and ≤ kernel_size ({kernel_size}), got {map_k}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.dilation, self.groups = stride, dilation, groups
        self.padding = dilation * (kernel_size - 1) // 2
        shape = (out_channels, in_channels // groups, kernel_size, kernel_size)
        base = torch.empty(shape)
        nn.init.kaiming_normal_(base, mode="fan_out", nonlinearity="relu")
        self.register_buffer("base_weight", base)
        n_kernels = out_channels * in_channels // groups
        self.transform = nn.Conv2d(
            n_kernels, n_kernels, map_k, padding=map_k // 2, groups=n_kernels // groups, bias=False
        )
        nn.init.zeros_(self.transform.weight)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def effective_weight(self) -> torch.Tensor:
        base = self.base_weight
        k = self.kernel_size
        return base + self.transform(base.reshape(1, -1, k, k)).reshape(base.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            x, self.effective_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups
        )

    @torch.no_grad()
    def reparameterize(self) -> nn.Conv2d:
        """The equivalent plain conv: no transform left to evaluate at inference."""
        weight = self.effective_weight()
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            bias=self.bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        conv.weight.copy_(weight)
        if self.bias is not None:
            conv.bias.copy_(self.bias)
        return conv


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each pixel of an (N, C, H, W) map (Restormer's pre-norm)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class MDTA(nn.Module):
    """Transposed (channel) self-attention: a (C/heads)² map per head, so cost is linear in pixels.

    q, k and v come from a 1×1 conv (channel context) then a depthwise 3×3 (local context); q and k are
    L2-normalised over pixels so their dot products are cosines, and a learned per-head temperature sets
    the softmax sharpness in place of the usual 1/√d.
    """

    def __init__(self, channels: int, heads: int = 4, bias: bool = False):
        super().__init__()
        channels, heads = positive_int("channels", channels), positive_int("heads", heads)
        if channels % heads:
            raise ValueError(f"MDTA heads ({heads}) must divide the channel count ({channels})")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=bias)
        self.qkv_dw = nn.Conv2d(channels * 3, channels * 3, 3, padding=1, groups=channels * 3, bias=bias)
        self.proj = nn.Conv2d(channels, channels, 1, bias=bias)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, c, h, w = x.shape
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (t.reshape(n, self.heads, c // self.heads, h * w) for t in (q, k, v))
        return F.normalize(q, dim=-1), F.normalize(k, dim=-1), v

    def _attend(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """(N, heads, C/heads, C/heads): exposed so its size can be checked against the pixel count."""
        q, k, _ = self._qkv(x)
        return self._attend(q, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x)
        out = self._attend(q, k) @ v  # (N, heads, C/heads, H·W)
        return self.proj(out.reshape(x.shape))


class RAD(nn.Module):
    """One pyramid level: (RefConv 3×3 → BN → ReLU) ×2, then x + MDTA(LayerNorm(x)).

    The paper's name says "downsampling", but in a top-down pyramid the block keeps its input's
    resolution; the level-to-level upsampling happens outside it.
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 4):
        super().__init__()
        self.conv1 = RefConv(in_channels, out_channels, 3)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = RefConv(out_channels, out_channels, 3)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)
        self.norm = ChannelLayerNorm(out_channels)
        self.attn = MDTA(out_channels, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        y = self.act(self.bn2(self.conv2(y)))
        return y + self.attn(self.norm(y))
