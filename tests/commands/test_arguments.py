"""One CLI style: every command's --help (usage line, defaults, --config, --print_config) and typo hints.

All through ``python -m rec_lightning`` in subprocesses, the way a user meets them.
"""

from __future__ import annotations

import pytest
import yaml
from cli_helpers import QUICKSTART, describe, run_cli

from rec_lightning.commands.arguments import nearest_option_hint

NON_TRAINER = ["evaluate", "report", "export", "recommend", "baseline", "check-data", "make-demo-data"]


def test_nearest_option_hint_by_hand():
    options = ["--checkpoint", "--output", "--trainer.max_steps", "--trainer.max_epochs"]
    assert nearest_option_hint("unrecognized arguments: --checkpont x", options) == "\nDid you mean --checkpoint?"
    assert nearest_option_hint("Unrecognized arguments: --trainer.max_step 3", options).endswith("--trainer.max_steps?")
    assert nearest_option_hint("unrecognized arguments: --zzz", options) == ""
    # a nested key is only matched within its own group: no misleading --trainer.* hint for a --model.* typo
    assert nearest_option_hint("unrecognized arguments: --model.init_args.max_step 3", options) == ""


@pytest.mark.parametrize("command", NON_TRAINER)
def test_help_shows_usage_defaults_config_and_print_config(command, tmp_path):
    result = run_cli(command, "--help", cwd=tmp_path)
    assert result.returncode == 0, describe(result)
    out = result.stdout
    assert out.startswith(f"usage: python -m rec_lightning {command} ") and "__main__.py" not in out
    assert "--config CONFIG" in out and "--print_config" in out
    assert "default:" in out or command == "check-data"  # check-data's two options are both required


def test_export_accepts_a_config_file_and_prints_it_back(tmp_path):
    (tmp_path / "export.yaml").write_text("checkpoint: runs/a/final_checkpoint\noutput: exports/a\nmerge: true\n")
    result = run_cli("export", "--config", "export.yaml", "--output", "exports/b", "--print_config", cwd=tmp_path)
    assert result.returncode == 0, describe(result)
    printed = yaml.safe_load(result.stdout)
    assert printed["checkpoint"] == "runs/a/final_checkpoint" and printed["output"] == "exports/b"  # flag wins
    assert printed["merge"] is True and printed["portable"] is False and printed["dtype"] is None


def test_a_typo_suggests_the_nearest_key(tmp_path):
    result = run_cli("export", "--checkpont", "x", "--output", "y", cwd=tmp_path)
    assert result.returncode == 2 and "Did you mean --checkpoint?" in result.stderr, describe(result)


def test_fit_help_lists_modules_names_the_optimizer_and_takes_short_names(tmp_path):
    helped = run_cli("fit", "--help", cwd=tmp_path)
    assert helped.returncode == 0, describe(helped)
    out = " ".join(helped.stdout.split())  # help text is wrapped
    assert out.startswith("usage: python -m rec_lightning [options] fit") and "__main__.py" not in out
    for name in ("rec_lightning.SFTModule", "rec_lightning.GRPOModule", "rec_lightning.RecDataModule",
                 "ItemSequenceDataModule"):
        assert name in out, name
    assert "typed options of the module, not LightningCLI's --optimizer / --lr_scheduler" in out
    assert "--model.optimizer.lr" in out

    printed = run_cli("fit", "--config", str(QUICKSTART), "--model", "GRPOModule", "--model.sft_checkpoint", "x",
                      "--print_config", cwd=tmp_path)
    assert printed.returncode == 0, describe(printed)
    # the short name resolves to the class (jsonargparse writes it by its top-level export)
    assert yaml.safe_load(printed.stdout)["model"]["class_path"] in ("rec_lightning.GRPOModule",
                                                                     "rec_lightning.modules.grpo.GRPOModule")

    # (not a prefix: LightningCLI still expands abbreviations such as --trainer.max_step)
    typo = run_cli("fit", "--config", str(QUICKSTART), "--trainer.max_stpes", "3", cwd=tmp_path)
    assert typo.returncode == 2 and "Did you mean --trainer.max_steps?" in typo.stderr, describe(typo)
