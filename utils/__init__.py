"""The course library of *Attention Heads of Large Language Models*.

Laid out by concept, not by chapter (the book page "The course library",
``book/library.md``, lists every module and its public functions):

    core           models (load_model), the Head type, hook names, positions, metrics
    data           one prompt set per task, all of one shape (data.base.PromptSet): IOI,
                   facts and capitals, needles, syntax, acronyms, sentiment, rare words,
                   repeated tokens
    scores         attention-pattern scores, the retrieval score (Eq. 4) and NAS (Eq. 5)
    attribution    the logit lens, direct logit attribution, QK/OV circuits
    interventions  one engine: replace / add / project out / knock out, batched
                   variants, patching, ablation, direct / indirect / total effects
    analysis       directions, ranking agreement, classifying heads
    viz            figures
    toy            tiny attention-only transformers trained in a chapter
    course         the course's own machinery (setup cell, exercises and checks, book
                   extension, taxonomy, published head indices); the library never
                   imports it
"""

__version__ = "0.1.0"

import os as _os
import warnings as _warnings

# Progress bars (TransformerLens's patching loop draws one) go to stderr, which the book
# build reports as a warning; the course prints its own summaries instead. tqdm reads
# this setting when it is first imported, which happens after this package's import.
_os.environ.setdefault("TQDM_DISABLE", "1")

# Outside Jupyter widgets, tqdm warns on import in every notebook; the course shows no
# progress bars, so the warning is noise in the book.
_warnings.filterwarnings("ignore", message="IProgress not found")
