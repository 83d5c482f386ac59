"""Generation over semantic IDs: the SID trie, constrained beam search/sampling (and its slow reference), log-probs.

Core layer: plain torch/transformers, never Lightning.
"""
