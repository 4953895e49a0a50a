"""golf's code as one module specialized to one run, for a submission's ``train_gpt.py``.

The exported file knows every config value and the evaluation stages, so the code it carries is
partially evaluated: golf's modules become one namespace (their imports of each other vanish), the
config's reads become constants, what those constants decide is folded away, and what only a failed
run reaches (a raise nothing catches, and the branch that leads to it) goes, but for the checks before
any work (``failures.PREFLIGHT``): a user's mistake stays one line, never a traceback (but for golf's
data-folder binding and memory check, which ``stubs.STUBS`` drops, with why). Each pass keeps the
behaviour of a run that succeeds; what no kept code names is dropped. golf.submission minifies the result.

The modules: ``driver`` (the whole pass and the loop of passes), ``flatten`` (one namespace), ``prune``
(what the entry reaches), ``stubs`` (what a submission's run does not need), the passes (``run_config``,
``fold``, ``bindings``, ``attributes``, ``inline``, ``parameters``, ``failures``), and what they read:
``tree`` (walking, copying), ``scopes``, ``analyses`` (kept while the tree does not change), ``effects``;
``embedded`` (a module kept as its own source, for Triton, pruned to what the code reaches).
"""
from golf.specialize.driver import specialize
from golf.specialize.tree import SpecializeError

__all__ = ["SpecializeError", "specialize"]
