"""MaskFormer's transformer decoder: learned queries attend to the coarsest backbone feature (DETR's decoder),
each query then gives class logits (with a no-object class) and a mask embedding."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fapn.layers.init import c2_xavier_fill

__all__ = ["PositionEmbeddingSine", "TransformerDecoderLayer", "MLP", "TransformerPredictor"]


class PositionEmbeddingSine(nn.Module):
    """DETR's 2-D sine position encoding, normalised to ``[0, 2π]`` over the map.

    Channels ``[0, F)`` encode the row, ``[F, 2F)`` the column (``F = num_pos_feats``), each as interleaved
    ``sin, cos`` of ``pos / temperature ** (2 * (i // 2) / F)``.

    Args:
        num_pos_feats: ``F``, half the output channels.
        temperature: frequency base.

    Example:
        >>> PositionEmbeddingSine(8)(torch.zeros(2, 3, 4, 5)).shape
        torch.Size([2, 16, 4, 5])
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature

    def forward(self, x: Tensor) -> Tensor:
        """``[N, 2F, H, W]`` for a ``[N, C, H, W]`` map (only its shape is read)."""
        height, width = x.shape[-2:]
        eps, scale = 1e-6, 2 * math.pi
        ones = torch.ones(1, height, width, device=x.device, dtype=torch.float32)
        y = ones.cumsum(1)
        x_pos = ones.cumsum(2)
        y = y / (y[:, -1:, :] + eps) * scale
        x_pos = x_pos / (x_pos[:, :, -1:] + eps) * scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = x_pos[..., None] / dim_t
        pos_y = y[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        pos = torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)
        return pos.expand(x.shape[0], -1, -1, -1).to(x.dtype)


class TransformerDecoderLayer(nn.Module):
    """DETR's post-norm decoder layer: self-attention, cross-attention to the image, feed-forward, each followed
    by dropout, a residual sum and LayerNorm. Positions are added to queries and keys, never to values.

    Args:
        d_model: width.
        nhead: attention heads.
        dim_feedforward: hidden width of the feed-forward block.
        dropout: dropout probability.

    Example:
        >>> layer = TransformerDecoderLayer(32, 4, 64)
        >>> layer(torch.zeros(2, 5, 32), torch.randn(2, 12, 32), torch.randn(5, 32), torch.randn(2, 12, 32)).shape
        torch.Size([2, 5, 32])
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, tgt: Tensor, memory: Tensor, query_pos: Tensor, pos: Tensor) -> Tensor:
        """Args:
            tgt: queries ``[N, Q, C]``.
            memory: image tokens ``[N, HW, C]``.
            query_pos: learned query positions ``[Q, C]`` or ``[N, Q, C]``.
            pos: image token positions ``[N, HW, C]``.

        Returns:
            ``[N, Q, C]``.
        """
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, tgt, need_weights=False)[0]))
        attended = self.cross_attn(tgt + query_pos, memory + pos, memory, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(attended))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))


class MLP(nn.Sequential):
    """``num_layers`` linear layers with ReLU between them (DETR's FFN for the mask embedding)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(dims)):
            layers.append(nn.Linear(a, b))
            if i < num_layers - 1:
                layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class TransformerPredictor(nn.Module):
    """MaskFormer's transformer predictor (no encoder layers, as its ADE20K configs): ``num_queries`` learned
    queries decoded against the projected coarsest feature; per layer, class logits ``[N, Q, K+1]`` and masks
    ``[N, Q, H, W]`` = mask embeddings · per-pixel embeddings.

    The decoder's output after each layer goes through one shared final LayerNorm (DETR's intermediate outputs),
    so every layer can be supervised (deep supervision).

    Args:
        in_channels: channels of the feature the queries attend to (the backbone's stride-32 map).
        num_classes: ``K``; the class head has ``K + 1`` outputs (the last is "no object").
        hidden_dim: transformer width (256).
        num_queries: queries (100).
        nheads: attention heads (8).
        dim_feedforward: feed-forward width (2048).
        dec_layers: decoder layers (6).
        dropout: dropout (0.1).
        mask_dim: channels of the per-pixel embeddings (256).

    Example:
        >>> predictor = TransformerPredictor(
        ...     64, 3, hidden_dim=32, num_queries=5, nheads=4, dim_feedforward=64, dec_layers=2, mask_dim=16
        ... )
        >>> classes, masks = predictor(torch.randn(1, 64, 2, 3), torch.randn(1, 16, 16, 24))
        >>> classes.shape, masks.shape
        (torch.Size([2, 1, 5, 4]), torch.Size([2, 1, 5, 16, 24]))
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hidden_dim: int = 256,
        num_queries: int = 100,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        dec_layers: int = 6,
        dropout: float = 0.1,
        mask_dim: int = 256,
    ) -> None:
        super().__init__()
        if hidden_dim % 2:
            raise ValueError(f"hidden_dim must be even (half of it encodes rows, half columns), got {hidden_dim}")
        self.num_queries = num_queries
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2)
        self.layers = nn.ModuleList(
            TransformerDecoderLayer(hidden_dim, nheads, dim_feedforward, dropout) for _ in range(dec_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        for p in self.layers.parameters():  # DETR's Transformer._reset_parameters
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.input_proj: nn.Module = nn.Identity()
        if in_channels != hidden_dim:
            self.input_proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
            c2_xavier_fill(self.input_proj)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def forward(self, x: Tensor, mask_features: Tensor) -> tuple[Tensor, Tensor]:
        """Args:
            x: the coarsest feature ``[N, in_channels, h, w]``.
            mask_features: per-pixel embeddings ``[N, mask_dim, H, W]`` (the pixel decoder's output).

        Returns:
            class logits ``[L, N, Q, K + 1]`` and mask logits ``[L, N, Q, H, W]`` of every decoder layer ``L``,
            the last layer last.
        """
        pos = self.pe_layer(x).flatten(2).transpose(1, 2)
        memory = self.input_proj(x).flatten(2).transpose(1, 2)
        query_pos = self.query_embed.weight.unsqueeze(0).expand(x.shape[0], -1, -1)
        tgt = torch.zeros_like(query_pos)
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, memory, query_pos, pos)
            outputs.append(self.decoder_norm(tgt))
        hidden = torch.stack(outputs)  # [L, N, Q, C]
        class_logits = self.class_embed(hidden)
        mask_logits = torch.einsum("lnqc,nchw->lnqhw", self.mask_embed(hidden), mask_features)
        return class_logits, mask_logits
