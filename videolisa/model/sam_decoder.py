"""SAM's mask decoder evaluated in a cheaper order, for a CPU.

segment-anything's ``MaskDecoder`` projects all 4096 image tokens to queries, keys and values in each of
the five attentions between the 6 prompt tokens and the image: most of its work per frame. The
products can be taken the other way round, ``(q Wk) x^T`` instead of ``q (x Wk)^T`` and ``(A x) Wv``
instead of ``A (x Wv)``, so that the projections apply to the 6 tokens and the image is read once per
product: the same function up to float rounding, for about half the operations and a fraction of the
memory traffic. The residual additions and biases of the image go into those products, and the
upscaling to the low-res mask runs as two matrix products over the cells that post-processing reads.
This module only reorders arithmetic: the weights and every module that sees prompt tokens alone are
segment-anything's own.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch.nn import functional as F


def decode_single_mask(decoder, embeddings: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor,
                       dense: torch.Tensor, extent: Optional[tuple[int, int]] = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``decoder(..., multimask_output=False)`` for one prompt over a batch of frames.

    embeddings [b, C, h, w], image_pe [1, C, h, w], sparse [1, n, C] (the prompt's tokens), dense [C] (the
    no-mask embedding). ``extent`` (rows, cols) asks for the low-res mask of the top-left rows x cols cells of
    the embedding grid only (each cell gives 4 x 4 low-res pixels); by default all of it. Returns the first
    mask's low-res logits [b, 4 rows, 4 cols] and its predicted IoU [b].
    """
    b, c, h, w = embeddings.shape
    transformer = decoder.transformer
    tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight, sparse[0]])[None]  # [1, T, C]
    pe = image_pe.flatten(2).transpose(1, 2)  # [1, HW, C]
    # The layer input is image + shift: the embeddings plus the no-mask embedding, which is the same at every
    # position and is carried along instead of added to each one. A view: nothing writes into the embeddings
    # (channels-last from SAM's encoder, as a cache may hold them).
    image, shift = embeddings.flatten(2).transpose(1, 2), dense  # [b, HW, C], [C]

    queries = tokens
    for layer in transformer.layers:
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + tokens
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)
        keys = image + (pe if shift is None else pe + shift)
        queries = layer.norm2(queries + _tokens_to_image(layer.cross_attn_token_to_image, queries + tokens, keys,
                                                         image, shift))
        queries = layer.norm3(queries + layer.mlp(queries))
        image = layer.norm4(_add_image_to_tokens(layer.cross_attn_image_to_token, keys, queries + tokens, queries,
                                                 image, shift))
        shift = None
    # Only the IoU token and the first mask token are read after the final attention (its norm is per token):
    # the other four tokens' rows are not computed.
    queries, tokens = queries[:, :2], tokens[:, :2]
    final = _tokens_to_image(transformer.final_attn_token_to_image, queries + tokens, image + pe, image)
    queries = transformer.norm_final_attn(queries + final)

    hyper = decoder.output_hypernetworks_mlps[0](queries[:, 1])  # [b, C/8]: only the first mask is asked for
    low = _upscaled_mask(decoder.output_upscaling, image.view(b, h, w, c), hyper, *(extent or (h, w)))
    iou = decoder.iou_prediction_head(queries[:, 0])[:, 0]
    return low, iou


def _heads(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """A projection's weight [heads * d, C] as [heads, d, C]."""
    return weight.view(heads, -1, weight.shape[-1])


def _tokens_to_image(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     v_shift: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``attn(q, k, v + v_shift)`` with few queries [B, T, C] and many keys and values [b, N, C]."""
    heads, t = attn.num_heads, q.shape[1]
    d = attn.internal_dim // heads
    queries = attn.q_proj(q).unflatten(-1, (heads, d))  # [B, T, heads, d]
    # Scores q.(k Wk + bk) = (q Wk).k + q.bk: the second term is the same for every key and leaves the softmax.
    reach = torch.einsum("bthd,hdc->bhtc", queries, _heads(attn.k_proj.weight, heads) / math.sqrt(d))
    weights = torch.softmax(reach.flatten(1, 2) @ k.transpose(1, 2), dim=-1)  # [b, heads*T, N]
    # The weights sum to one, so A (v Wv + bv) = (A v) Wv + bv, and a shift common to all values passes through.
    mixed = weights @ v if v_shift is None else torch.baddbmm(v_shift, weights, v)
    values = torch.einsum("bhtc,hdc->bthd", mixed.unflatten(1, (heads, t)), _heads(attn.v_proj.weight, heads))
    return attn.out_proj(values.flatten(2) + attn.v_proj.bias)


def _add_image_to_tokens(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, image: torch.Tensor,
                         shift: Optional[torch.Tensor]) -> torch.Tensor:
    """``image + shift + attn(q, k, v)`` with many queries [b, N, C] and few keys and values [b, T, C]."""
    heads, t = attn.num_heads, k.shape[1]
    d = attn.internal_dim // heads
    keys = attn.k_proj(k).unflatten(-1, (heads, d)) / math.sqrt(d)  # [b, T, heads, d]
    values = attn.v_proj(v).unflatten(-1, (heads, d))
    # Scores (q Wq + bq).k = q (Wq^T k) + bq.k: one product of the image with a [C, heads*T] matrix.
    reach = torch.einsum("hdc,bthd->bcht", _heads(attn.q_proj.weight, heads), keys).flatten(2)
    offset = torch.einsum("hd,bthd->bht", attn.q_proj.bias.view(heads, d), keys).flatten(1)
    # Scores as [b, heads*T, N]: a softmax over T then runs along N, vectorised (over a last axis of 6 it crawls).
    scores = torch.baddbmm(offset[..., None], reach.transpose(1, 2), q.transpose(1, 2))
    weights = torch.softmax(scores.unflatten(1, (heads, t)), dim=2).flatten(1, 2)
    # Each head's values through its slice of the output projection: [b, heads*T, C]. Each head's weights
    # sum to one over its T rows, so a term added to every row, divided by the number of heads, reaches every
    # image token whole: the output bias and the shift go in there, and the residual is the product's start.
    projected = torch.einsum("bthd,chd->bhtc", values, attn.out_proj.weight.view(-1, heads, d)).flatten(1, 2)
    common = attn.out_proj.bias if shift is None else attn.out_proj.bias + shift
    return torch.baddbmm(image, weights.transpose(1, 2), projected + common / heads)


def _upscaled_mask(upscaling, image: torch.Tensor, hyper: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """segment-anything's ``output_upscaling`` and the hypernetwork's product, on the top-left rows x cols cells.

    image [b, h, w, C], hyper [b, C'']. A transposed convolution of kernel 2 and stride 2 maps each cell to its
    own 2 x 2 block, so each one is a product with its kernel laid out as [C_in, 2 * 2 * C_out], and the
    channel norm and activations act per pixel: no cell needs its neighbours. Returns [b, 4 rows, 4 cols].
    """
    up1, norm, act1, up2, act2 = upscaling
    b, c = image.shape[0], image.shape[-1]
    w1, b1 = up1.weight.permute(0, 2, 3, 1).reshape(c, -1), up1.bias.repeat(4)
    w2, b2 = up2.weight.permute(0, 2, 3, 1).reshape(up2.in_channels, -1), up2.bias.repeat(4)
    low = image.new_empty(b, rows * cols * 16)
    # One frame at a time, activations in place: the intermediates (5 MB a frame) stay in cache rather than
    # being mapped afresh for each batch, which took half the upscaling's time on a CPU.
    for i in range(b):
        cells = image[i, :rows, :cols].reshape(-1, c)  # [rows*cols, C], a view when all columns are kept
        x = torch.addmm(b1, cells, w1).view(-1, up1.out_channels)  # [P, (2, 2, C')] as [4P, C']
        x = _activate(act1, F.layer_norm(x, (up1.out_channels,), norm.weight, norm.bias, norm.eps))
        x = _activate(act2, torch.addmm(b2, x, w2)).view(-1, up2.out_channels)  # [16P, C'']
        torch.mv(x, hyper[i], out=low[i])
    # Cell (i, j), first kernel position (u, v), second (s, t) -> low-res pixel (4i + 2u + s, 4j + 2v + t).
    return low.view(b, rows, cols, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4, 6).reshape(b, 4 * rows, 4 * cols)


def _activate(act, x: torch.Tensor) -> torch.Tensor:
    """``act(x)`` for a temporary x: overwritten in place when act is a GELU (segment-anything's choice)."""
    if isinstance(act, torch.nn.GELU):
        return torch.ops.aten.gelu_(x, approximate=act.approximate)
    return act(x)
