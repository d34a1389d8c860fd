"""VQ-16 image tokenizer of Janus (encoder, codebook, decoder); module names follow transformers' JanusVQVAE."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unicorn.kernels import group_norm_silu
from unicorn.models.janus_config import VQArch


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


_SILU_CHUNK = 1 << 16  # elements per in-place step: the sigmoid's temporary stays in L2 (256 KiB)


def _swish(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(x), bit-identical to the whole-tensor ops. Without autograd it works in place; at one thread
    a cache-sized chunk at a time (each element meets the same vectorised sigmoid as in the whole-tensor op, since
    the chunks are multiples of the vector width: only a tensor's last n % 16 elements take the scalar path, in
    both); at more threads in one go, since every chunk would be a parallel region of its own."""
    if torch.is_grad_enabled() and x.requires_grad:
        return x * torch.sigmoid(x)
    if torch.get_num_threads() > 1:
        return x.mul_(torch.sigmoid(x))
    flat = (x if x.is_contiguous() else x.permute(0, 2, 3, 1)).view(-1)  # NCHW or channels-last, dense
    for chunk in flat.split(_SILU_CHUNK):
        chunk.mul_(torch.sigmoid(chunk))
    return x


def _norm_swish(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """swish(norm(x)); without autograd on contiguous fp32 CPU tensors the one-pass C++ op (bit-identical,
    unicorn/kernels/group_norm_silu.py), else torch's group norm and then :func:`_swish`."""
    if not torch.is_grad_enabled() and group_norm_silu.can_fuse(x, norm.num_groups):
        return group_norm_silu.group_norm_silu(x, norm.weight, norm.bias, norm.num_groups, norm.eps)
    return _swish(norm(x))


def _add_residual(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x + h, into h when autograd allows (h is a fresh conv output; addition commutes exactly)."""
    return x + h if torch.is_grad_enabled() and (h.requires_grad or x.requires_grad) else h.add_(x)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = _group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_norm_swish(self.norm1, x))
        h = self.conv2(_norm_swish(self.norm2, h))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return _add_residual(h, x)


class AttnBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = _group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        b, c, height, width = x.shape
        q = self.q(h).reshape(b, c, height * width).transpose(1, 2)  # [B, HW, C]
        k = self.k(h).reshape(b, c, height * width)  # [B, C, HW]
        v = self.v(h).reshape(b, c, height * width)
        weights = torch.softmax(torch.bmm(q, k) * (int(c) ** -0.5), dim=2)  # [B, HWq, HWk]
        out = torch.bmm(v, weights.transpose(1, 2)).reshape(b, c, height, width)
        return _add_residual(self.proj_out(out), x)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad, as the original


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()


class Encoder(nn.Module):
    def __init__(self, arch: VQArch):
        super().__init__()
        mult = arch.channel_multiplier
        base = arch.base_channels
        self.conv_in = nn.Conv2d(arch.in_channels, base, 3, 1, 1)
        in_mult = (1,) + tuple(mult)
        self.down = nn.ModuleList()
        block_in = base
        for level, m in enumerate(mult):
            down = _Level()
            block_in = base * in_mult[level]
            for _ in range(arch.num_res_blocks):
                down.block.append(ResnetBlock(block_in, base * m))
                block_in = base * m
                if level == len(mult) - 1:
                    down.attn.append(AttnBlock(block_in))
            if level != len(mult) - 1:
                down.downsample = Downsample(block_in)
            self.down.append(down)
        self.mid = MidBlock(block_in)
        self.norm_out = _group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, arch.latent_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level, down in enumerate(self.down):
            for i, block in enumerate(down.block):
                h = block(h)
                if len(down.attn):
                    h = down.attn[i](h)
            if hasattr(down, "downsample"):
                h = down.downsample(h)
        h = self.mid(h)
        return self.conv_out(_norm_swish(self.norm_out, h))


class Decoder(nn.Module):
    def __init__(self, arch: VQArch):
        super().__init__()
        mult = arch.channel_multiplier
        base = arch.base_channels
        block_in = base * mult[-1]
        self.conv_in = nn.Conv2d(arch.latent_channels, block_in, 3, 1, 1)
        self.mid = MidBlock(block_in)
        self.up = nn.ModuleList()  # up[0] is the lowest resolution, as in the checkpoints
        for level in reversed(range(len(mult))):
            up = _Level()
            for _ in range(arch.num_res_blocks + 1):
                up.block.append(ResnetBlock(block_in, base * mult[level]))
                block_in = base * mult[level]
                if level == len(mult) - 1:
                    up.attn.append(AttnBlock(block_in))
            if level != 0:
                up.upsample = Upsample(block_in)
            self.up.append(up)
        self.norm_out = _group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, arch.out_channels, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for up in self.up:
            for i, block in enumerate(up.block):
                h = block(h)
                if len(up.attn):
                    h = up.attn[i](h)
            if hasattr(up, "upsample"):
                h = up.upsample(h)
        return self.conv_out(_norm_swish(self.norm_out, h))


class VectorQuantizer(nn.Module):
    def __init__(self, arch: VQArch):
        super().__init__()
        self.embedding = nn.Embedding(arch.num_embeddings, arch.embed_dim)

    def nearest_codes(self, z: torch.Tensor, l2_normalized: bool = True) -> torch.Tensor:
        """z: [B, C, h, w] -> code ids [B, h*w] (row-major).

        ``l2_normalized=True`` is the original Janus VQ-16 lookup (codebook_l2_norm: both sides unit-normalised);
        ``False`` reproduces transformers' JanusVQVAEVectorQuantizer, which compares raw vectors.
        """
        b = z.shape[0]
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        codebook = self.embedding.weight
        if l2_normalized:
            flat = F.normalize(flat, p=2, dim=-1)
            codebook = F.normalize(codebook, p=2, dim=-1)
        distances = (
            flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2 * torch.einsum("bd,nd->bn", flat, codebook)
        )
        return distances.argmin(dim=1).view(b, -1)

    def codebook_entries(self, ids: torch.Tensor, grid: int) -> torch.Tensor:
        """ids: [B, grid*grid] -> unit-normalised codes [B, embed_dim, grid, grid]."""
        codes = F.normalize(self.embedding(ids), p=2, dim=-1)
        return codes.view(ids.shape[0], grid, grid, -1).permute(0, 3, 1, 2).contiguous()


class VQModel(nn.Module):
    def __init__(self, arch: VQArch, grid: int):
        super().__init__()
        self.grid = grid  # latent side length the decoder expects (JanusArch.generation_grid)
        self.encoder = Encoder(arch)
        self.quantize = VectorQuantizer(arch)
        self.quant_conv = nn.Conv2d(arch.latent_channels, arch.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(arch.embed_dim, arch.latent_channels, 1)
        self.decoder = Decoder(arch)

    def encode(self, pixel_values: torch.Tensor, l2_normalized: bool = True) -> torch.Tensor:
        return self.quantize.nearest_codes(self.quant_conv(self.encoder(pixel_values)), l2_normalized)

    def decode(self, ids: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """ids [B, grid*grid] -> pixels [B, 3, S, S] (contiguous), bit-identical to transformers' decoder.

        ``channels_last=True`` runs the decoder's activations channels-last (oneDNN's brgemm convolutions, no
        layout reorders around each one; torch's channels-last GroupNorm is slower, so no faster end to end on
        an AVX2 CPU), which sums in another order: not bit-identical (bench/vq_decode.py measures the error)."""
        if ids.dim() != 2 or ids.shape[1] != self.grid * self.grid:
            raise ValueError(f"image token ids must be [batch, {self.grid * self.grid}], got {tuple(ids.shape)}")
        z = self.post_quant_conv(self.quantize.codebook_entries(ids, self.grid))
        if channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        return self.decoder(z).contiguous()
