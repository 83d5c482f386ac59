"""LearningRateProgressBar prints learning rates as 3.00e-04, other metrics untouched; fit uses it by default."""

from types import SimpleNamespace

from lightning.pytorch.callbacks import TQDMProgressBar

from rec_lightning.callbacks.progress import LearningRateProgressBar


def test_learning_rates_print_in_scientific_notation(monkeypatch):
    shown = {"lr": 0.0003, "lr-AdamW": 2e-05, "train/loss": 1.25, "v_num": 0}
    monkeypatch.setattr(TQDMProgressBar, "get_metrics", lambda self, trainer, module: dict(shown))
    items = LearningRateProgressBar().get_metrics(SimpleNamespace(), SimpleNamespace())
    assert items == {"lr": "3.00e-04", "lr-AdamW": "2.00e-05", "train/loss": 1.25, "v_num": 0}


def test_fit_cli_adds_the_bar_unless_disabled_or_given():
    from rec_lightning.commands.trainer import RecLightningCLI

    captured = {}

    class Probe(RecLightningCLI):
        def __init__(self):  # no parsing: only the trainer-building hook is under test
            self.trainer_defaults, self.save_config_callback = {}, None

    def fake_super(self, config, callbacks):
        captured["callbacks"] = callbacks

    import lightning.pytorch.cli as lightning_cli
    original = lightning_cli.LightningCLI._instantiate_trainer
    lightning_cli.LightningCLI._instantiate_trainer = fake_super
    try:
        Probe()._instantiate_trainer({"callbacks": []}, [])
        assert [type(c) for c in captured["callbacks"]] == [LearningRateProgressBar]
        Probe()._instantiate_trainer({"callbacks": [], "enable_progress_bar": False}, [])
        assert captured["callbacks"] == []
        mine = TQDMProgressBar()
        Probe()._instantiate_trainer({"callbacks": [mine]}, [])
        assert captured["callbacks"] == []
    finally:
        lightning_cli.LightningCLI._instantiate_trainer = original
