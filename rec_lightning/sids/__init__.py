"""Semantic IDs: the SID codec and :class:`~rec_lightning.sids.codec.ItemCatalog`, item embeddings, quantisers, collision handling.

Core layer: plain torch/Python, never Lightning (the RQ-VAE training loop lives in :mod:`rec_lightning.modules.rqvae`).
"""
