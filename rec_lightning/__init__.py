"""rec_lightning: LLM-based generative recommendation with semantic IDs, on PyTorch Lightning.

Core modules (``sid``, ``prompts``, ``trie``, ``decoding``, ``rewards``, ``losses``, ``metrics``)
are plain torch/Python; ``data``, ``modules`` and ``callbacks`` build on them in that order.
"""

__version__ = "0.1.0"
