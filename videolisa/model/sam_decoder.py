"""SAM's mask decoder evaluated in a cheaper order, for a CPU.

segment-anything's ``MaskDecoder`` projects all 4096 image tokens to queries, keys and values in each of
the five attentions between the 6 prompt tokens and the image: most of its work per frame. The
products can be taken the other way round, ``(q Wk) x^T`` instead of ``q (x Wk)^T`` and ``(A x) Wv``
instead of ``A (x Wv)``, so that the projections apply to the 6 tokens and the image is read once per
product: the same function up to float rounding, for about half the operations and a fraction of the
memory traffic. This module only reorders arithmetic: the weights and every module that sees prompt
tokens alone are segment-anything's own.
"""

from __future__ import annotations

import math

import torch


def decode_single_mask(decoder, embeddings: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor,
                       dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``decoder(..., multimask_output=False)`` for one prompt over a batch of frames.

    embeddings [b, C, h, w], image_pe [1, C, h, w], sparse [1, n, C] (the prompt's tokens), dense [C] (the
    no-mask embedding). Returns the first mask's low-res logits [b, 4h, 4w] and its predicted IoU [b].
    """
    b, c, h, w = embeddings.shape
    transformer = decoder.transformer
    tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight, sparse[0]])[None]  # [1, T, C]
    # A new [b, HW, C] array: SAM's encoder returns channels-last embeddings, which a cache may hold.
    image = torch.add(embeddings.flatten(2).transpose(1, 2), dense,
                      out=embeddings.new_empty(b, h * w, c))
    pe = image_pe.flatten(2).transpose(1, 2)  # [1, HW, C]

    queries = tokens
    for layer in transformer.layers:
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + tokens
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)
        keys = image + pe
        queries = layer.norm2(queries + _tokens_to_image(layer.cross_attn_token_to_image, queries + tokens, keys, image))
        queries = layer.norm3(queries + layer.mlp(queries))
        image = layer.norm4(image + _image_to_tokens(layer.cross_attn_image_to_token, keys, queries + tokens, queries))
    final = _tokens_to_image(transformer.final_attn_token_to_image, queries + tokens, image + pe, image)
    queries = transformer.norm_final_attn(queries + final)

    upscaled = decoder.output_upscaling(image.transpose(1, 2).view(b, c, h, w))  # [b, C/8, 4h, 4w]
    hyper = decoder.output_hypernetworks_mlps[0](queries[:, 1])  # only the first mask is asked for
    low = (hyper[:, None] @ upscaled.flatten(2)).view(b, *upscaled.shape[-2:])
    iou = decoder.iou_prediction_head(queries[:, 0])[:, 0]
    return low, iou


def _heads(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """A projection's weight [heads * d, C] as [heads, d, C]."""
    return weight.view(heads, -1, weight.shape[-1])


def _tokens_to_image(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``attn(q, k, v)`` with few queries [B, T, C] and many keys and values [b, N, C]."""
    heads, t = attn.num_heads, q.shape[1]
    d = attn.internal_dim // heads
    queries = attn.q_proj(q).unflatten(-1, (heads, d))  # [B, T, heads, d]
    # Scores q.(k Wk + bk) = (q Wk).k + q.bk: the second term is the same for every key and leaves the softmax.
    reach = torch.einsum("bthd,hdc->bhtc", queries, _heads(attn.k_proj.weight, heads) / math.sqrt(d))
    weights = torch.softmax(reach.flatten(1, 2) @ k.transpose(1, 2), dim=-1)  # [b, heads*T, N]
    # The weights sum to one, so A (v Wv + bv) = (A v) Wv + bv.
    mixed = (weights @ v).unflatten(1, (heads, t))  # [b, heads, T, C]
    values = torch.einsum("bhtc,hdc->bthd", mixed, _heads(attn.v_proj.weight, heads)).flatten(2)
    return attn.out_proj(values + attn.v_proj.bias)


def _image_to_tokens(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``attn(q, k, v)`` with many queries [b, N, C] and few keys and values [b, T, C]."""
    heads, t = attn.num_heads, k.shape[1]
    d = attn.internal_dim // heads
    keys = attn.k_proj(k).unflatten(-1, (heads, d)) / math.sqrt(d)  # [b, T, heads, d]
    values = attn.v_proj(v).unflatten(-1, (heads, d))
    # Scores (q Wq + bq).k = q (Wq^T k) + bq.k: one product of the image with a [C, heads*T] matrix.
    reach = torch.einsum("hdc,bthd->bcht", _heads(attn.q_proj.weight, heads), keys).flatten(2)
    offset = torch.einsum("hd,bthd->bht", attn.q_proj.bias.view(heads, d), keys).flatten(1)
    # Scores as [b, heads*T, N]: a softmax over T then runs along N, vectorised (over a last axis of 6 it crawls).
    scores = reach.transpose(1, 2) @ q.transpose(1, 2) + offset[..., None]
    weights = torch.softmax(scores.unflatten(1, (heads, t)), dim=2).flatten(1, 2)
    # Each head's values through its slice of the output projection: [b, heads*T, C].
    projected = torch.einsum("bthd,chd->bhtc", values, attn.out_proj.weight.view(-1, heads, d)).flatten(1, 2)
    return weights.transpose(1, 2) @ projected + attn.out_proj.bias
