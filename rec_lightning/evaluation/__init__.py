"""Evaluation: ranking metrics, the ranking evaluator and its result files, item ranking, significance, report tables and charts.

Core layer: plain torch/Python, never Lightning.
"""
