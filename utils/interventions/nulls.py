"""The evidence standard's ablation test when only the last position is ablated.

:func:`utils.interventions.ablation.compare_ablation` resumes a cached run at each set's
first ablated layer and recomputes every position from there. When the heads are
ablated at the **last position only** (the usual test of a head that writes the answer),
nothing before that position changes: :func:`compare_ablation_at_last` computes the
prompts' prefix once (:class:`utils.interventions.runner.PrefixRun`) and runs the chosen
set and its layer-matched null on the last token alone, all sets batched. On prompts of
``T`` tokens that is roughly ``T`` times less work, which matters for long prompts
(multiple-choice questions) and many draws. The result is the same
:class:`~utils.interventions.ablation.AblationComparison`.

:func:`last_position_means` gives mean ablation's values for such a test from a cache of
*other* prompts (the selection half), whose length may differ from the evaluation
prompts': only the last position's mean is needed.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from transformer_lens.utilities import get_act_name

from utils.core.heads import Head
from utils.interventions.ablation import AblationComparison, chosen_and_null_sets
from utils.interventions.hooks import replace_heads_hooks
from utils.interventions.runner import PrefixRun, run_prefix_variants

__all__ = ["compare_ablation_at_last", "last_position_means"]


def compare_ablation_at_last(
    model: Any,
    tokens: Tensor,
    chosen: Sequence[Head],
    values: Sequence[Tensor],
    metric: Callable[[Tensor], Tensor] | Mapping[str, Callable[[Tensor], Tensor]],
    *,
    n_draws: int = 20,
    seed: int = 0,
    exclude: Sequence[Head] = (),
    prefix: PrefixRun | None = None,
) -> AblationComparison | dict[str, AblationComparison]:
    """Ablate the ``chosen`` heads together at the last position of every prompt, then each
    of ``n_draws`` layer-matched random sets (:func:`utils.core.heads.layer_matched_random_heads`,
    seeds ``seed .. seed + n_draws - 1``, never a chosen head or one of ``exclude``), the
    same way: the test of :func:`~utils.interventions.ablation.compare_ablation` with
    ``positions`` = the last position, on a shared prefix.

    Args:
        tokens: ``(batch, pos)``, the evaluation prompts (at least 2 tokens each; the
            last token is the one whose heads are ablated).
        values: one replacement per layer, from :func:`~utils.interventions.ablation.ablation_values`.
        metric: the last position's logits ``(batch, d_vocab)`` -> one value per prompt
            ``(batch,)``, higher = better; or several metrics by name, read from the same
            runs (the result is then one comparison per name).
        exclude: heads kept out of the draws (heads the chapter gives another role).
        prefix: ``PrefixRun(model, tokens, tokens.shape[1] - 1)`` computed once and shared
            by several tests on the same prompts; ``None`` computes it here.

    Returns:
        :class:`~utils.interventions.ablation.AblationComparison` (``.drops``,
        ``.null_drops``, ``.percentile``).

    Raises:
        ValueError: tokens not ``(batch, pos >= 2)``, no chosen heads, a head out of
            range, ``n_draws < 1``, a metric that does not return ``(batch,)``, or a
            ``prefix`` of other prompts or another length.
    """
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError("tokens must be a (batch, pos) tensor of token ids with pos >= 2")
    chosen, draws = chosen_and_null_sets(model, chosen, n_draws=n_draws, seed=seed, exclude=exclude)
    batch, length = int(tokens.shape[0]), int(tokens.shape[1])
    last = torch.full((batch,), length - 1, dtype=torch.long)

    def ablate(heads: Sequence[Head]) -> Callable[[Tensor], list]:
        return lambda rows: replace_heads_hooks(model, heads, values, positions=last, rows=rows)

    variants = {"clean": lambda rows: []} | {"chosen": ablate(chosen)}
    variants |= {f"draw {draw}": ablate(heads) for draw, heads in enumerate(draws)}
    if prefix is None:
        prefix = PrefixRun(model, tokens, length - 1)
    elif not isinstance(prefix, PrefixRun) or prefix.prefix_len != length - 1 or not torch.equal(prefix.tokens, tokens):
        raise ValueError("prefix must be PrefixRun(model, tokens, tokens.shape[1] - 1) of these tokens")
    with torch.no_grad():
        finals = run_prefix_variants(model, prefix, variants)

    def per_prompt(metric: Callable[[Tensor], Tensor], final: Tensor) -> Tensor:
        value = metric(final)
        if not isinstance(value, Tensor) or value.shape != (batch,):
            raise ValueError(
                f"metric must return one value per prompt, shape ({batch},), got "
                f"{tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__}"
            )
        return value.detach().float().cpu()

    def comparison(metric: Callable[[Tensor], Tensor]) -> AblationComparison:
        return AblationComparison(
            clean=per_prompt(metric, finals["clean"]),
            chosen=per_prompt(metric, finals["chosen"]),
            null=torch.stack([per_prompt(metric, finals[f"draw {draw}"]) for draw in range(n_draws)]),
            chosen_heads=tuple(chosen),
            null_sets=tuple(draws),
        )

    if isinstance(metric, Mapping):
        return {name: comparison(one) for name, one in metric.items()}
    return comparison(metric)


def last_position_means(model: Any, cache: Any, length: int) -> list[Tensor]:
    """Mean ablation's values for a last-position ablation on prompts of ``length`` tokens,
    from a cache of other prompts: per layer, ``hook_z`` at the cached prompts' last
    position averaged over them, repeated over ``length`` positions, ``(1, length,
    n_heads, d_head)`` (the shape :func:`compare_ablation_at_last` aligns to the end).

    Args:
        cache: a run's cache holding every layer's ``hook_z`` (``(batch, pos, n_heads, d_head)``).
        length: the evaluation prompts' token length, ``>= 2``.

    Raises:
        ValueError: ``length`` not an int ``>= 2``, or a layer's ``hook_z`` missing.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ValueError(f"length must be an int >= 2, got {length!r}")
    values = []
    for layer in range(model.cfg.n_layers):
        name = get_act_name("z", layer)
        if name not in cache:
            raise ValueError(f"the cache lacks {name}: run with hook_z in names_filter")
        last = cache[name][:, -1:].mean(dim=0, keepdim=True)  # (1, 1, n_heads, d_head)
        values.append(last.expand(1, length, *last.shape[2:]).contiguous())
    return values
