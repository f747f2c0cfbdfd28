"""Benchmark: naive per-head activation patching vs the fast exact version vs attribution
patching, on the same IOI batch.

Run it from the repository root (it is not a test and pytest does not collect it)::

    HF_HUB_OFFLINE=1 .venv/bin/python tests/benchmarks/patching.py [--prompts 4] [--threads N]

It exits with status 1 unless the fast exact sweep beats the naive loop and attribution
patching takes under a fifth of the fast exact sweep's time (the speed claims of chapter
10, which prints its timings and asserts none; ``--min-exact-speedup`` and
``--min-attribution-vs-exact`` change the bars). ``make benchmark`` runs it.

The naive loop is TransformerLens's own ``get_act_patch_attn_head_out_all_pos``: one
full forward pass per head, with a hook replacing that head's ``hook_z`` by its value on
the clean run. The last line printed reads
``exact_speedup=<x> attribution_speedup=<y> spearman=<r> max_abs_diff=<d>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

import torch


def _timed(function: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformer_lens.patching as tl_patching

    # The reference sweep draws a progress bar over 270 heads; the table is enough.
    tl_patching.tqdm = lambda iterable, *args, **kwargs: iterable

    from utils.data.ioi import ioi_dataset
    from transformer_lens.utilities import get_act_name
    from utils.core.metrics import logit_diff
    from utils.core.models import describe_model, load_model, set_seed
    from utils.interventions.patching import (
        attribution_patching_sweep,
        head_patching_sweep,
    )
    from utils.analysis.ranking import ranking_agreement

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4, help="IOI prompts in the batch")
    parser.add_argument("--model", default=None, help="model name; the embedded model by default")
    parser.add_argument("--top", type=int, default=10, help="size of the top-k overlap")
    parser.add_argument(
        "--threads", type=int, default=0,
        help="torch threads (0 = torch's default, one per core). Use 1 on a machine shared "
        "with other jobs: OpenMP threads that spin while another core is busy make "
        "timings swing by an order of magnitude",
    )
    parser.add_argument("--min-exact-speedup", type=float, default=1.0,
                        help="the fast exact sweep must be this many times faster than the naive loop")
    parser.add_argument("--min-attribution-vs-exact", type=float, default=5.0,
                        help="attribution patching must be this many times faster than the fast exact sweep")
    options = parser.parse_args()
    if options.threads:
        torch.set_num_threads(options.threads)

    set_seed(0)
    model = load_model(options.model, device="cpu")
    ioi = ioi_dataset(model, options.prompts, seed=0)
    clean, corrupted = ioi.tokens, ioi.corrupted_tokens

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logit_diff(logits, ioi.answer_ids, ioi.wrong_ids)

    print(describe_model(model))
    print(f"IOI batch: {tuple(clean.shape)} tokens, {torch.get_num_threads()} torch threads")

    def naive() -> torch.Tensor:
        with torch.no_grad():
            _, clean_cache = model.run_with_cache(
                clean, names_filter=[get_act_name("z", layer) for layer in range(model.cfg.n_layers)]
            )
            return tl_patching.get_act_patch_attn_head_out_all_pos(
                model, corrupted, clean_cache, metric
            ).cpu()

    naive_values, naive_seconds = _timed(naive)
    # logit_diff reads only the final position, so only that position is unembedded.
    exact_values, exact_seconds = _timed(
        lambda: head_patching_sweep(model, clean, corrupted, metric, last_position_only=True)
    )
    attribution_values, attribution_seconds = _timed(
        lambda: attribution_patching_sweep(model, clean, corrupted, metric)
    )

    max_abs_diff = float((exact_values - naive_values).abs().max())
    # Rank heads by how far patching moves the metric away from the corrupted run.
    with torch.no_grad():
        corrupted_value = float(metric(model(corrupted)))
    agreement = ranking_agreement(
        exact_values - corrupted_value, attribution_values - corrupted_value, k=options.top
    )
    spearman, overlap, k = agreement.spearman, agreement.top_k_overlap, agreement.k

    rows = [
        ("naive loop (TransformerLens)", naive_seconds, naive_values),
        ("exact, fast (utils.patching)", exact_seconds, exact_values),
        ("attribution patching", attribution_seconds, attribution_values),
    ]
    print(f"\n{'method':<32}{'seconds':>10}{'speedup':>10}{'max |diff| vs naive':>22}")
    for name, seconds, values in rows:
        diff = float((values - naive_values).abs().max())
        print(f"{name:<32}{seconds:>10.2f}{naive_seconds / seconds:>10.1f}{diff:>22.2e}")
    print(f"\nattribution vs exact: Spearman {spearman:.3f} over {exact_values.numel()} heads, "
          f"top-{k} overlap {overlap}/{k}")
    exact_speedup = naive_seconds / exact_seconds
    attribution_speedup = naive_seconds / attribution_seconds
    print(
        f"exact_speedup={exact_speedup:.1f} attribution_speedup={attribution_speedup:.1f} "
        f"spearman={spearman:.3f} max_abs_diff={max_abs_diff:.2e}"
    )
    failures = []
    if exact_speedup <= options.min_exact_speedup:
        failures.append(f"the fast exact sweep is only {exact_speedup:.1f}x the naive loop's speed")
    if exact_seconds / attribution_seconds <= options.min_attribution_vs_exact:
        failures.append(
            f"attribution patching is only {exact_seconds / attribution_seconds:.1f}x faster than the fast exact sweep"
        )
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
