"""Resume and interruption through ``python -m rec_lightning fit`` (issue 10, items 1 and 2).

One uninterrupted 8-step quickstart run is the baseline. A run SIGKILLed at step 5 (mid-epoch: an epoch
is ~150 steps) resumes from ``last.ckpt`` (step 4); a run SIGTERMed at step 3 saves ``interrupted.ckpt``,
exits 143 and prints the resume command. Both resumed runs end with exactly the baseline's weights.
"""

from __future__ import annotations

import json
import shlex

import pytest
from safetensors.torch import load_file

from cli_helpers import (LORA_RUN_EXTRA, QUICKSTART, REPO, assert_clean_error, describe, run_cli, run_in_process, short_fit_args,
                         write_short_run_config)


@pytest.fixture(scope="module")
def baseline(sft_run):
    """The uninterrupted 8-step run (conftest's shared ``sft_run``)."""
    return sft_run


def final_weights(folder):
    return load_file(str(folder / "run" / "final_checkpoint" / "model.safetensors"))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    different = [name for name in a if not (a[name] == b[name]).all()]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_from_last_ckpt_reproduces_the_weights(tmp_path, cache, baseline):
    config = write_short_run_config(tmp_path)
    killed = run_cli(*short_fit_args(config, "--trainer.callbacks+=cli_helpers.SignalAtStep", "--trainer.callbacks.step=5",
                                     "--trainer.callbacks.signal_name=SIGKILL"), cwd=tmp_path, cache=cache)
    assert killed.returncode == -9, describe(killed)
    assert not (tmp_path / "run" / "final_checkpoint").exists()
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    resumed = run_cli(*short_fit_args(config, "--ckpt_path", str(last)), cwd=tmp_path, cache=cache)
    assert resumed.returncode == 0, describe(resumed)
    assert "Restored all states from the checkpoint" in resumed.stdout + resumed.stderr
    assert_same_weights(final_weights(tmp_path), final_weights(baseline))


@pytest.mark.slow  # 19 s; moved when the default tier reached 8 minutes on the sixth session's machine
def test_sigterm_saves_a_checkpoint_exits_143_and_its_resume_command_reproduces_the_weights(tmp_path, cache, baseline):
    config = write_short_run_config(tmp_path)
    stopped = run_cli(*short_fit_args(config, "--trainer.callbacks+=cli_helpers.SignalAtStep", "--trainer.callbacks.step=3",
                                      "--trainer.callbacks.signal_name=SIGTERM"), cwd=tmp_path, cache=cache)
    assert stopped.returncode == 143, describe(stopped)
    saved = tmp_path / "run" / "checkpoints" / "interrupted.ckpt"
    assert saved.is_file() and not (tmp_path / "run" / "final_checkpoint").exists()
    assert f"interrupted by SIGTERM at step 3 (epoch 0); a checkpoint was saved to {saved}" \
        in stopped.stderr, describe(stopped)
    hint = stopped.stderr.split("Resume with:\n", 1)[1].splitlines()[0].strip()
    command = shlex.split(hint)
    assert command[:3] == ["python", "-m", "rec_lightning"] and command[-2] == "--ckpt_path"
    assert "SignalAtStep" in hint  # the exact command line, repeated: drop the fault injector to resume here
    args = [a for a in command[3:] if "callbacks" not in a]
    resumed = run_cli(*args, cwd=tmp_path, cache=cache)
    assert resumed.returncode == 0, describe(resumed)
    assert_same_weights(final_weights(tmp_path), final_weights(baseline))


@pytest.mark.slow  # 18 s: two more fits (the full-run SIGTERM resume above goes through the same path)
def test_sigterm_then_resume_of_a_lora_run_reproduces_its_adapter(tmp_path, lora_run):
    """configs/quickstart_lora.yaml, packed (conftest's 4-step ``lora_run`` is the uninterrupted run): stopped at step 2,
    resumed from ``interrupted.ckpt``, the saved adapter (LoRA matrices and trainable SID rows) is the same."""
    config = write_short_run_config(tmp_path, max_steps=4)
    lora_args = ["fit", "--config", str(QUICKSTART), "--config", str(REPO / "configs" / "quickstart_lora.yaml"),
                 "--config", str(config), *LORA_RUN_EXTRA]  # packed batches, as lora_run: the resume is exact there too
    stopped = run_cli(*lora_args, "--trainer.callbacks+=cli_helpers.SignalAtStep", "--trainer.callbacks.step=2",
                      "--trainer.callbacks.signal_name=SIGTERM", cwd=tmp_path)
    assert stopped.returncode == 143, describe(stopped)
    saved = tmp_path / "run" / "checkpoints" / "interrupted.ckpt"
    resumed = run_cli(*lora_args, "--ckpt_path", str(saved), cwd=tmp_path)
    assert resumed.returncode == 0, describe(resumed)
    assert "Restored all states from the checkpoint" in resumed.stdout + resumed.stderr
    adapter = "final_checkpoint/adapter_model.safetensors"
    assert_same_weights(load_file(str(tmp_path / "run" / adapter)), load_file(str(lora_run / "run" / adapter)))


# predict stays in the default tier; validate and test (8 s each, the same ckpt_path path) run in the slow tier
@pytest.mark.parametrize("subcommand", [pytest.param("validate", marks=pytest.mark.slow),
                                        pytest.param("test", marks=pytest.mark.slow), "predict"])
def test_validate_test_predict_accept_ckpt_path(tmp_path, cache, baseline, subcommand):
    last = baseline / "run" / "checkpoints" / "last.ckpt"
    extra = {"validate": ["--trainer.limit_val_batches", "2"],
             "test": ["--trainer.limit_test_batches", "1", "--trainer.callbacks+=RankingEvaluation",
                      "--trainer.callbacks.test_num_beams=5", "--trainer.callbacks.limit=8"],
             "predict": ["--trainer.limit_predict_batches", "1", "--trainer.callbacks+=RankingPredictionWriter",
                         "--trainer.callbacks.num_beams=5"]}[subcommand]
    config = write_short_run_config(tmp_path)
    args = short_fit_args(config, "--ckpt_path", str(last), *extra)
    args[0] = subcommand
    result = run_cli(*args, cwd=tmp_path, cache=cache)
    assert "Parsing of ckpt_path hyperparameters failed" not in result.stderr
    assert result.returncode == 0, describe(result)
    if subcommand == "predict":  # the checkpoint parses and loads, and the rows of one batch are ranked
        (written,) = (tmp_path / "run" / "logs").glob("version_*/predictions/eval_results.json")
        assert len(json.loads(written.read_text())) == 32  # the quickstart's eval batch size
    assert "Parsing of ckpt_path hyperparameters failed" not in result.stderr
    assert "Restored all states" in result.stdout + result.stderr or "Loaded model weights" in result.stdout + \
        result.stderr, describe(result)


def test_ckpt_path_that_is_not_a_checkpoint_is_a_clear_error(tmp_path, cache):
    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"\xff" * 4096)
    config = write_short_run_config(tmp_path)
    result = run_cli(*short_fit_args(config, "--ckpt_path", str(bad)), cwd=tmp_path, cache=cache)
    assert_clean_error(result, f"{bad}: not a readable Lightning checkpoint", "Fix:")
    missing = run_in_process(*short_fit_args(config, "--ckpt_path", str(tmp_path / "nope.ckpt")), cwd=tmp_path)
    assert_clean_error(missing, "no such checkpoint file")


@pytest.mark.slow
def test_predict_with_ckpt_path_for_grpo_and_sasrec(tmp_path, cache, baseline):
    """GRPO (from the baseline SFT run) answers predict like SFT, with the command that ranks; SASRec predicts."""
    sft = baseline / "run" / "final_checkpoint"
    grpo = tmp_path / "grpo"
    common = ["--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(grpo),
              "--trainer.logger.init_args.save_dir", str(grpo)]
    fit = run_cli("fit", "--config", "configs/grpo_quickstart.yaml", "--model.init_args.sft_checkpoint", str(sft),
                  "--data.init_args.tokenizer", str(sft), "--trainer.max_steps", "2", "--trainer.limit_val_batches",
                  "0", *common, cwd=REPO, cache=cache)
    assert fit.returncode == 0, describe(fit)
    (last,) = grpo.rglob("*.ckpt")
    predicted = run_cli("predict", "--config", "configs/grpo_quickstart.yaml", "--model.init_args.sft_checkpoint",
                        str(sft), "--data.init_args.tokenizer", str(sft), "--trainer.limit_predict_batches", "1",
                        *common, "--ckpt_path", str(last), cwd=REPO, cache=cache)
    assert "Parsing of ckpt_path hyperparameters failed" not in predicted.stderr
    assert predicted.returncode == 0, describe(predicted)  # GRPO ranks in predict like SFT
    (written,) = grpo.glob("logs/version_*/predictions/eval_results.json")
    assert json.loads(written.read_text())[0]["predict"]

    sasrec = tmp_path / "sasrec"
    args = ["--config", "configs/sasrec.yaml", "--trainer.default_root_dir", str(sasrec), "--trainer.max_epochs", "1",
            "--model.init_args.hidden_size", "16"]
    fit = run_cli("fit", *args, cwd=REPO, cache=cache)
    assert fit.returncode == 0, describe(fit)
    (best,) = sasrec.rglob("*.ckpt")
    predicted = run_cli("predict", *args, "--trainer.limit_predict_batches", "1", "--ckpt_path", str(best), cwd=REPO,
                        cache=cache)
    assert predicted.returncode == 0, describe(predicted)
    assert "Restored all states" in predicted.stdout + predicted.stderr or \
        "Loaded model weights" in predicted.stdout + predicted.stderr, describe(predicted)
    # the written rankings are baseline --kind sasrec's for the same rows (the final checkpoint is the best .ckpt)
    (written,) = sasrec.glob("**/predictions/eval_results.json")
    records = json.loads(written.read_text())
    ranked = run_cli("baseline", "--kind", "sasrec", "--checkpoint", str(sasrec / "final_checkpoint"), "--split", "test",
                     "--num_items", "50", "--output", str(tmp_path / "baseline"), cwd=REPO, cache=cache)
    assert ranked.returncode == 0, describe(ranked)
    baseline = {r["row"]: r for r in json.loads((tmp_path / "baseline" / "eval_results.json").read_text())}
    assert records and all(r["predict"] == baseline[r["row"]]["predict"] for r in records)
    assert all(r["scores"] == baseline[r["row"]]["scores"] for r in records)
