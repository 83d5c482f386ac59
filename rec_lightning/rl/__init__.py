"""Reinforcement learning pieces: rewards and the GRPO losses.

Core layer: plain torch/numpy, never Lightning (the GRPO LightningModule lives in :mod:`rec_lightning.modules.grpo`).
"""
