"""Shared machinery for the Attention Heads course.

Modules:
    models    load_model (embedded SmolLM2-135M-Instruct or any TransformerLens model), set_seed
    metrics   logit_diff, per-head scores (previous-token, duplicate, induction, retrieval, NAS)
    hooks     zero / mean ablation, head patching, residual additions, head outputs
    lens      logit lens and direct logit attribution
    effects   direct, indirect and total effect of a head
    datasets  repeated random tokens, IOI prompts, validated factual recall
    plotting  layer x head heatmaps, attention patterns, offline circuitsvis
    taxonomy  the survey's head types, methods and benchmarks as data
"""

__version__ = "0.1.0"

import warnings as _warnings

# Outside Jupyter widgets, tqdm warns on import in every notebook; the course shows no
# progress bars, so the warning is noise in the book.
_warnings.filterwarnings("ignore", message="IProgress not found")
