"""Hook names and hook lists.

Names come from TransformerLens's own helper, :func:`transformer_lens.utilities.get_act_name`
(``get_act_name("z", 3) == "blocks.3.attn.hook_z"``); the library and the chapters
never spell a hook name by hand. A hook list is a list of ``(hook_name, hook_function)``
pairs for ``model.run_with_hooks(..., fwd_hooks=...)`` or ``with model.hooks(...)``;
lists compose by concatenation.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor
from transformer_lens.utilities import get_act_name

__all__ = ["HookList", "get_act_name", "final_resid_name"]

HookList = list[tuple[str, Callable[..., Tensor]]]


def final_resid_name(model: Any) -> str:
    """The residual stream after the last block, just before the final norm."""
    return get_act_name("resid_post", model.cfg.n_layers - 1)
