"""A small transformer with TransformerLens's hook names, for training from scratch.

:class:`ToyTransformer` is a plain PyTorch module built on TransformerLens's
``HookedRootModule`` and ``HookPoint``. It names its activations and weights as
TransformerLens's ``HookedTransformer`` did (``blocks.{l}.attn.hook_pattern``,
``blocks.{l}.attn.hook_z``, ``blocks.{l}.hook_resid_pre``, ``model.W_Q``, ...), so
``run_with_cache``, ``run_with_hooks``, ``cache["pattern", l]`` and every score in
:mod:`utils.metrics` work on it unchanged. By default it is *attention-only*: no MLP
and no layer norm, the setting of Elhage et al. (2021); ``d_mlp`` adds a ReLU MLP to
each block for tasks that need a nonlinearity after attention (parity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens import ActivationCache, HookedRootModule
from transformer_lens.hook_points import HookPoint

__all__ = ["ToyConfig", "ToyTransformer", "composition_scores", "ACTIVATIONS_PER_LAYER"]

#: The activations every block hooks, by TransformerLens's short names
#: (``get_act_name(name, layer)`` is the hook's name); MLP blocks add ``"resid_mid"``,
#: ``"pre"``, ``"post"`` and ``"mlp_out"``.
ACTIVATIONS_PER_LAYER = ("resid_pre", "q", "k", "v", "attn_scores", "pattern", "z", "attn_out", "resid_post")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


@dataclass(frozen=True)
class ToyConfig:
    """Sizes of a :class:`ToyTransformer`; the attribute names are TransformerLens's.

    Args:
        n_layers, n_heads, d_model, d_head: as in TransformerLens.
        d_vocab: number of tokens.
        n_ctx: the longest sequence the learned positional embedding covers.
        d_mlp: width of a ReLU MLP after each attention layer; ``None`` for an
            attention-only model.
        init_range: standard deviation of the normal initialisation; by default
            ``0.8 / sqrt(d_model)``, TransformerLens's rule for small models.
    """

    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 64
    d_head: int = 16
    d_vocab: int = 32
    n_ctx: int = 64
    d_mlp: int | None = None
    init_range: float | None = None

    def __post_init__(self) -> None:
        for name in ("n_layers", "n_heads", "d_model", "d_head", "d_vocab", "n_ctx"):
            _positive_int(name, getattr(self, name))
        if self.d_mlp is not None:
            _positive_int("d_mlp", self.d_mlp)
        if self.init_range is not None and not self.init_range > 0:
            raise ValueError(f"init_range must be positive, got {self.init_range!r}")

    # Attributes some TransformerLens-style code reads from ``model.cfg``.
    @property
    def attn_only(self) -> bool:
        return self.d_mlp is None

    @property
    def n_key_value_heads(self) -> int:
        return self.n_heads

    @property
    def positional_embedding_type(self) -> str:
        return "standard"

    @property
    def normalization_type(self) -> None:
        return None

    @property
    def std(self) -> float:
        return self.init_range if self.init_range is not None else 0.8 / math.sqrt(self.d_model)


class _Attention(nn.Module):
    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        h, m, d = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.empty(h, m, d))
        self.W_K = nn.Parameter(torch.empty(h, m, d))
        self.W_V = nn.Parameter(torch.empty(h, m, d))
        self.W_O = nn.Parameter(torch.empty(h, d, m))
        self.b_Q = nn.Parameter(torch.zeros(h, d))
        self.b_K = nn.Parameter(torch.zeros(h, d))
        self.b_V = nn.Parameter(torch.zeros(h, d))
        self.b_O = nn.Parameter(torch.zeros(m))
        self.scale = math.sqrt(d)
        self.register_buffer(
            "mask", torch.tril(torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool)), persistent=False
        )
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        self.hook_attn_scores, self.hook_pattern, self.hook_z = HookPoint(), HookPoint(), HookPoint()

    def forward(self, resid: Tensor) -> Tensor:
        q = self.hook_q(torch.einsum("bpm,hmd->bphd", resid, self.W_Q) + self.b_Q)
        k = self.hook_k(torch.einsum("bpm,hmd->bphd", resid, self.W_K) + self.b_K)
        v = self.hook_v(torch.einsum("bpm,hmd->bphd", resid, self.W_V) + self.b_V)
        n_pos = resid.shape[1]
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / self.scale
        scores = scores.masked_fill(~self.mask[:n_pos, :n_pos], float("-inf"))
        pattern = self.hook_pattern(self.hook_attn_scores(scores).softmax(dim=-1))
        z = self.hook_z(torch.einsum("bhqk,bkhd->bqhd", pattern, v))
        return torch.einsum("bqhd,hdm->bqm", z, self.W_O) + self.b_O


class _MLP(nn.Module):
    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        assert cfg.d_mlp is not None
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()

    def forward(self, resid: Tensor) -> Tensor:
        hidden = self.hook_post(F.relu(self.hook_pre(resid @ self.W_in + self.b_in)))
        return hidden @ self.W_out + self.b_out


class _Block(nn.Module):
    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        self.attn = _Attention(cfg)
        self.mlp = _MLP(cfg) if cfg.d_mlp is not None else None
        self.hook_resid_pre, self.hook_attn_out = HookPoint(), HookPoint()
        self.hook_resid_post = HookPoint()
        if self.mlp is not None:
            self.hook_resid_mid, self.hook_mlp_out = HookPoint(), HookPoint()

    def forward(self, resid: Tensor) -> Tensor:
        resid = self.hook_resid_pre(resid)
        resid = resid + self.hook_attn_out(self.attn(resid))
        if self.mlp is not None:
            resid = self.hook_resid_mid(resid)
            resid = resid + self.hook_mlp_out(self.mlp(resid))
        return self.hook_resid_post(resid)


class ToyTransformer(HookedRootModule):
    """A decoder-only transformer with learned positions and TransformerLens hook names.

    ``model(tokens)`` returns logits ``(batch, pos, d_vocab)``; ``return_type="loss"``
    the mean next-token cross-entropy. Weights are initialised from ``seed`` with a
    private generator, so two models built with the same config and seed are equal
    whatever the global random state.
    """

    def __init__(self, cfg: ToyConfig, *, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(cfg, ToyConfig):
            raise ValueError(f"cfg must be a ToyConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab))
        self.hook_embed, self.hook_pos_embed = HookPoint(), HookPoint()
        self.init_weights(seed)
        self.setup()

    def init_weights(self, seed: int) -> None:
        """Draw every weight matrix from N(0, cfg.std^2); biases start at zero."""
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, parameter in self.named_parameters():
                if name.split(".")[-1].startswith("W_"):
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * self.cfg.std)

    def _check_tokens(self, tokens: Any) -> Tensor:
        if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"tokens must be an integer tensor, got {type(tokens).__name__}")
        if tokens.ndim == 1:
            tokens = tokens[None]
        if tokens.ndim != 2:
            raise ValueError(f"tokens must have shape (batch, pos), got {tuple(tokens.shape)}")
        if tokens.shape[1] > self.cfg.n_ctx:
            raise ValueError(f"sequences of {tokens.shape[1]} tokens exceed n_ctx={self.cfg.n_ctx}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.cfg.d_vocab):
            raise ValueError(
                f"token ids must lie in [0, {self.cfg.d_vocab - 1}], got "
                f"[{int(tokens.min())}, {int(tokens.max())}]"
            )
        return tokens.long()

    def forward(self, tokens: Tensor, return_type: str | None = "logits") -> Tensor | None:
        """Run the model.

        Args:
            tokens: ``(batch, pos)`` or ``(pos,)`` token ids.
            return_type: ``"logits"``, ``"loss"`` (mean next-token cross-entropy) or
                ``None``.
        """
        if return_type not in ("logits", "loss", None):
            raise ValueError(f"return_type must be 'logits', 'loss' or None, got {return_type!r}")
        tokens = self._check_tokens(tokens)
        n_pos = tokens.shape[1]
        resid = self.hook_embed(self.W_E[tokens]) + self.hook_pos_embed(self.W_pos[:n_pos])
        for block in self.blocks:
            resid = block(resid)
        logits = resid @ self.W_U + self.b_U
        if return_type == "logits":
            return logits
        if return_type == "loss":
            return F.cross_entropy(
                logits[:, :-1].reshape(-1, self.cfg.d_vocab), tokens[:, 1:].reshape(-1)
            )
        return None

    def run_with_cache(self, *args: Any, **kwargs: Any) -> tuple[Any, ActivationCache]:
        """As ``HookedRootModule.run_with_cache``, with the cache wrapped in an
        ``ActivationCache`` so that ``cache["pattern", 0]`` works."""
        out, cache_dict = super().run_with_cache(*args, **kwargs)
        return out, ActivationCache(cache_dict, self)

    # Stacked weights, shaped as TransformerLens's HookedTransformer shapes them.
    def _stack(self, name: str) -> Tensor:
        return torch.stack([getattr(block.attn, name) for block in self.blocks])

    @property
    def W_Q(self) -> Tensor:
        return self._stack("W_Q")

    @property
    def W_K(self) -> Tensor:
        return self._stack("W_K")

    @property
    def W_V(self) -> Tensor:
        return self._stack("W_V")

    @property
    def W_O(self) -> Tensor:
        return self._stack("W_O")

    @property
    def b_Q(self) -> Tensor:
        return self._stack("b_Q")

    @property
    def b_K(self) -> Tensor:
        return self._stack("b_K")

    @property
    def b_V(self) -> Tensor:
        return self._stack("b_V")

    @property
    def b_O(self) -> Tensor:
        return self._stack("b_O")

    def hook_names(self) -> list[str]:
        """Every hook name of the model, in the order the forward pass reaches them."""
        return list(self.hook_dict)


def composition_scores(model: ToyTransformer, kind: str = "K") -> Tensor:
    """Composition scores of every head of layer ``l`` with every head of layer ``l+1``
    (Elhage et al., 2021), from the weights alone.

    For an earlier head with ``W_OV = W_V W_O`` and a later head with
    ``W_QK = W_Q W_K^T`` (both ``d_model x d_model``), the score is
    ``||A B||_F / (||A||_F ||B||_F)`` with ``A = W_OV`` and ``B = W_QK^T`` for
    K-composition (the earlier head's output read by the later head's keys),
    ``B = W_QK`` for Q-composition and ``B = W_OV`` of the later head for V-composition.

    Returns:
        ``Tensor[n_layers - 1, n_heads, n_heads]``: ``[l, i, j]`` scores head ``i`` of
        layer ``l`` with head ``j`` of layer ``l + 1``.
    """
    if kind not in ("Q", "K", "V"):
        raise ValueError(f"kind must be 'Q', 'K' or 'V', got {kind!r}")
    if model.cfg.n_layers < 2:
        raise ValueError("composition needs at least two layers")
    with torch.no_grad():
        W_Q, W_K, W_V, W_O = model.W_Q, model.W_K, model.W_V, model.W_O
        ov = W_V @ W_O  # (layer, head, d_model, d_model)
        qk = W_Q @ W_K.transpose(-1, -2)
        right = {"K": qk.transpose(-1, -2), "Q": qk, "V": ov}[kind]
        rows = []
        for layer in range(model.cfg.n_layers - 1):
            left, later = ov[layer][:, None], right[layer + 1][None, :]
            product = (left @ later).norm(dim=(-2, -1))
            rows.append(product / (left.norm(dim=(-2, -1)) * later.norm(dim=(-2, -1))))
    return torch.stack(rows)
