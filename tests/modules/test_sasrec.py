"""SASRec: causal masking, padding, the training loss, and the safetensors round trip."""

import pytest
import torch

from rec_lightning.data.item_sequences import encode_history, training_tensors
from rec_lightning.modules.sasrec import SASRec, SASRecModule, load_sasrec
from rec_lightning.data.records import SequenceRecord


def test_encode_history_left_pads_and_keeps_the_most_recent_items():
    assert encode_history([4, 7], 4) == [0, 0, 5, 8]
    assert encode_history([1, 2, 3, 4, 5], 3) == [4, 5, 6]


def test_training_tensors_label_the_next_item_at_every_position():
    row = SequenceRecord("train", 0, "u1", (0, 1), ("a", "b"), ("<a_0><b_0><c_0>", "<a_1><b_1><c_1>"), 2, "c",
                         "<a_2><b_2><c_2>")
    tensors = training_tensors([row], max_history=3)  # [0, 1] -> 2: tokens are ids + 1
    assert tensors["input_ids"].tolist() == [[0, 1, 2]] and tensors["labels"].tolist() == [[0, 2, 3]]


def test_outputs_depend_only_on_earlier_real_items():
    torch.manual_seed(0)
    network = SASRec(num_columns=6, max_history=4, hidden_size=8, num_layers=2, num_heads=2, dropout=0.0).eval()
    a = network(torch.tensor([[0, 1, 2, 3]]))
    b = network(torch.tensor([[0, 1, 2, 5]]))  # only the last item differs
    assert torch.allclose(a[:, :3], b[:, :3]) and not torch.allclose(a[:, 3], b[:, 3])
    assert torch.isfinite(network(torch.tensor([[0, 0, 0, 1]]))).all()  # all-padding prefix: no NaN


def test_saved_checkpoint_reloads_to_identical_scores(tmp_path):
    torch.manual_seed(0)
    module = SASRecModule(hidden_size=8, num_layers=1, num_heads=2, num_columns=5, max_history=3)
    module.catalog_checksum = "abc"
    directory = module.save_final_checkpoint(tmp_path / "final_checkpoint")
    network, config = load_sasrec(directory)
    assert config["num_columns"] == 5 and config["catalog_checksum"] == "abc"
    histories = torch.tensor([[0, 1, 2], [3, 4, 5]])
    module.network.eval()
    assert torch.equal(network.score_histories(histories), module.network.score_histories(histories))
    assert not list(directory.glob(".*"))
    (directory / "sasrec.json").write_text('{"model": "other"}')
    with pytest.raises(ValueError, match="not a SASRec config"):
        load_sasrec(directory)


def test_training_step_loss_is_cross_entropy_over_all_items():
    torch.manual_seed(0)
    module = SASRecModule(hidden_size=8, num_layers=1, num_heads=2, dropout=0.0, num_columns=4, max_history=3).eval()
    batch = {"input_ids": torch.tensor([[0, 1, 2]]), "labels": torch.tensor([[0, 2, 3]])}
    logits = module.network.item_logits(module.network(batch["input_ids"]))[0]  # [L, V]
    expected = -(logits[1].log_softmax(-1)[1] + logits[2].log_softmax(-1)[2]) / 2  # labels: item ids 1, 2
    module.log = lambda *args, **kwargs: None
    assert module.training_step(batch, 0).item() == pytest.approx(expected.item(), rel=1e-6)
