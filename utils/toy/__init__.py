"""Small transformers trained from scratch on the CPU (chapter 16).

- :mod:`utils.toy.model`: :class:`~utils.toy.model.ToyTransformer`, with
  TransformerLens's hook and weight names, and weight-based composition scores;
- :mod:`utils.toy.tasks`: the repeated-segment and parity data, and the measurements
  that read them (losses by part of the sequence, the iteration-head share);
- :mod:`utils.toy.training`: the seeded training loop and the analysis of a run.
"""

from utils.toy.model import ToyConfig, ToyTransformer, composition_scores
from utils.toy.training import History, train

__all__ = ["ToyConfig", "ToyTransformer", "composition_scores", "History", "train"]
