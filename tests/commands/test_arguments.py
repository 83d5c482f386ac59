"""One CLI style: every command's --help (usage line, one default per option, --config, --print_config), typo
hints, no abbreviated options, and a start-up that imports neither torch nor Lightning for help and argument errors.

Through ``python -m rec_lightning`` in subprocesses (one per command's --help, which is now cheap), and through
``rec_lightning.cli.main(argv)`` in-process for ``fit``'s pure argument checks (one real ``fit`` subprocess stays).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml
from cli_helpers import QUICKSTART, cli_env, describe, run_cli

from rec_lightning.cli import COMMANDS
from rec_lightning.commands.arguments import nearest_option_hint

NON_TRAINER = ["evaluate", "report", "export", "recommend", "baseline", "check-data", "make-demo-data"]
HEAVY = ("torch", "lightning", "transformers", "torchmetrics", "peft", "pandas", "matplotlib")


def option_blocks(help_text: str) -> list[str]:
    """Each option's help, continuation lines joined: ``--data_dir DATA_DIR ... (default: ...)``."""
    blocks: list[str] = []
    for line in help_text.splitlines():
        if re.match(r"^  -", line):
            blocks.append(line.strip())
        elif blocks and line.startswith("   "):
            blocks[-1] += " " + line.strip()
    return [" ".join(block.split()) for block in blocks]


def assert_one_default_per_option(help_text: str) -> None:
    doubled = [block for block in option_blocks(help_text) if block.count("default:") > 1]
    assert not doubled, "options whose help gives two defaults:\n" + "\n".join(doubled[:5])


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
    assert_one_default_per_option(out)


def test_evaluate_help_states_each_default_once(tmp_path):
    """The option whose help says its default in words shows no second ``(default: null)``."""
    out = run_cli("evaluate", "--help", cwd=tmp_path).stdout
    data_dir = next(b for b in option_blocks(out) if b.startswith("--data_dir"))
    assert data_dir == "--data_dir DATA_DIR MiniOneRec-layout folder (default: the demo data set)"
    assert "--num_beams NUM_BEAMS (type: int, default: 50)" in option_blocks(out)


def test_help_and_argument_errors_import_neither_torch_nor_lightning(tmp_path):
    """Every non-Trainer command's --help and an unknown-option error, in one fresh interpreter: none of them
    imports torch, Lightning or transformers (so each answers in well under a second)."""
    commands = [name for name in COMMANDS]
    code = f"""
import contextlib, io, json, sys
from rec_lightning.cli import main
codes = {{}}
for argv in {[[c, "--help"] for c in commands] + [[c, "--no_such_option"] for c in commands]!r}:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(argv)
        except SystemExit as stop:
            codes[" ".join(argv)] = stop.code
print(json.dumps({{"codes": codes, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, describe(result)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], report
    for command in commands:
        assert report["codes"][f"{command} --help"] in (0, None), command
        assert report["codes"][f"{command} --no_such_option"] == 2, command


def test_abbreviated_options_are_refused(tmp_path):
    """``--data_d`` is not silently ``--data_dir`` (the function-style commands expanded it on main before this
    test); ``fit``'s ``--trainer.max_step`` is checked in-process below."""
    for command, argv in (("check-data", ["--data_d", "x", "--category", "C"]),
                          ("export", ["--check", "x", "--output", "y"])):
        result = run_cli(command, *argv, cwd=tmp_path)
        assert result.returncode == 2 and f"unrecognized arguments: {argv[0]} x" in result.stderr, describe(result)


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


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    """``rec_lightning.cli.main(argv)`` in this process: (exit code, stdout, stderr)."""
    from rec_lightning.cli import main

    try:
        main(list(argv))
        code = 0
    except SystemExit as stop:
        code = 0 if stop.code is None else stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow  # ~11 s of --help processes (the default tier's 8-minute limit)
def test_fit_help_lists_modules_names_the_optimizer_and_takes_short_names(tmp_path):
    helped = run_cli("fit", "--help", cwd=tmp_path)
    assert helped.returncode == 0, describe(helped)
    assert_one_default_per_option(helped.stdout)
    out = " ".join(helped.stdout.split())  # help text is wrapped
    assert out.startswith("usage: python -m rec_lightning [options] fit") and "__main__.py" not in out
    for name in ("rec_lightning.SFTModule", "rec_lightning.GRPOModule", "rec_lightning.RecDataModule",
                 "ItemSequenceDataModule"):
        assert name in out, name
    assert "typed options of the module, not LightningCLI's --optimizer / --lr_scheduler" in out
    assert "--model.optimizer.lr" in out



def test_fit_argument_checks_in_process(capsys):
    """fit's --print_config, short names, --model.help, typos and abbreviations, through cli.main(argv)."""
    code, out, err = run_main(capsys, "fit", "--config", str(QUICKSTART), "--model", "GRPOModule",
                              "--model.sft_checkpoint", "x", "--print_config")
    assert code == 0, err
    # the short name resolves to the class (jsonargparse writes it by its top-level export)
    assert yaml.safe_load(out)["model"]["class_path"] in ("rec_lightning.GRPOModule",
                                                          "rec_lightning.modules.grpo.GRPOModule")

    code, out, err = run_main(capsys, "fit", "--model.help", "SFTModule")
    assert code == 0, err
    assert out.startswith("usage: python -m rec_lightning fit") and "__main__.py" not in out, out[:200]
    assert "--model.backbone.model_name_or_path" in out
    assert_one_default_per_option(out)

    code, out, err = run_main(capsys, "fit", "--config", str(QUICKSTART), "--trainer.max_stpes", "3")
    assert code == 2 and "Did you mean --trainer.max_steps?" in err, err[-2000:]

    # an abbreviation is an unknown option, not max_steps (LightningCLI's parser would expand it)
    code, out, err = run_main(capsys, "fit", "--config", str(QUICKSTART), "--trainer.max_step", "3")
    assert code == 2 and "unrecognized arguments: --trainer.max_step 3" in err.replace("\n", " "), err[-2000:]
    assert "Did you mean --trainer.max_steps?" in err


def test_command_default_ks_are_the_metrics_default_ks():
    """commands/arguments.py writes the cut-offs out (so parsing needs no torch); they must stay the metrics' own."""
    from rec_lightning.commands.arguments import DEFAULT_KS
    from rec_lightning.evaluation.metrics import DEFAULT_KS as METRIC_KS

    assert DEFAULT_KS == METRIC_KS == (1, 3, 5, 10, 20, 50)
