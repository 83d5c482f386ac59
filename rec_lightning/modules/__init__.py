"""LightningModules and model construction.

``backbone`` (load or build the causal LM, add SID tokens), ``lora`` (fine-tuning modes; the only
peft import), ``optim`` (AdamW + schedule), ``sft`` (``SFTModule``), ``export`` (final checkpoints:
write, load, merge; the item catalog they carry), ``inference`` (``load_checkpoint``: the one loader of a final
checkpoint for evaluate, recommend and GRPO), ``grpo`` and ``reference`` (GRPO), ``rqvae`` (SID construction: the RQ-VAE and
``fit_rqvae``, its Trainer), ``rqkmeans_plus`` (RQ-KMeans+, ``fit_rqkmeans_plus``). Import from the submodules; this package imports nothing, so importing one
stays cheap.
"""
