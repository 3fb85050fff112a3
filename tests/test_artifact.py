import json

import pytest
import torch

from dpl.prompts import check_options
from dpl.artifact import (SCHEMA, ArtifactError, branch_summary, build_artifact,
                          derive_lengths, fixed_artifact, load_artifact, save_artifact)

DIMS = {"text": {"num_blocks": 3, "width": 64}, "vision": {"num_blocks": 2, "width": 128}}


def make_artifact():
    text = branch_summary(torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.5, 0.5, 3.0]]),
                          [0, 2, 4], 64, 0.5)
    vision = branch_summary(torch.zeros(2, 3), [0, 2, 4], 128, 0.5)
    return build_artifact("tiny", text, vision, {"dataset": "X", "seed": 1})


def test_derive_lengths_argmax_ties_to_shorter():
    alpha = torch.tensor([[0.1, 0.3, 0.3, 0.2], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 5.0]])
    assert derive_lengths(alpha, [0, 2, 4, 6]) == [2, 0, 6]


def test_branch_summary_fields():
    br = make_artifact()["text"]
    assert br["lengths"] == [2, 0, 4]
    assert br["num_blocks"] == 3 and br["width"] == 64
    assert all(abs(sum(r) - 1) < 1e-6 for r in br["probs"])
    # softmax([0,1,0]) top = 0.576 >= 0.5 -> dominant; uniform vision rows are not
    assert br["dominant"] == [True, True, True]
    assert make_artifact()["vision"]["dominant"] == [False, False]


def test_round_trip_and_fit_check(tmp_path):
    path = tmp_path / "prompt_config.json"
    save_artifact(str(path), make_artifact())
    art = load_artifact(str(path), DIMS)
    assert art["schema"] == SCHEMA and art["text"]["lengths"] == [2, 0, 4]
    assert set(art["provenance"]) >= {"dataset", "seed", "config_hash", "created"}
    wrong = {"text": {"num_blocks": 12, "width": 512}, "vision": DIMS["vision"]}
    with pytest.raises(ArtifactError, match=r"prompt_config\.json.*12 blocks x width 512"):
        load_artifact(str(path), wrong)


@pytest.mark.parametrize("mutate, message", [
    (lambda a: a.update(schema="dpl-prompt-config/0"), "schema"),
    (lambda a: a["text"].update(lengths=[1, -2, 0]), ">= 0"),
    (lambda a: a["text"].update(lengths=[1, 2]), "one length per block"),
    (lambda a: a.pop("vision"), "vision"),
])
def test_invalid_artifacts_name_the_file(tmp_path, mutate, message):
    art = make_artifact()
    mutate(art)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(art))
    with pytest.raises(ArtifactError, match=message) as err:
        load_artifact(str(path))
    assert "bad.json" in str(err.value)


def test_missing_and_malformed(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(str(tmp_path / "nope.json"))
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_artifact(str(bad))


@pytest.mark.parametrize("opts", [[2, 4], [0, 4, 2], [0, 0, 2], []])
def test_bad_option_lists(opts):
    with pytest.raises(ValueError, match="starting with 0"):
        check_options(opts, "text")


def test_fixed_artifact_validates():
    art = fixed_artifact("tiny", DIMS, [4, 4, 0], [2, 0], {"manual": True})
    assert art["text"]["options"] == [0, 4] and art["provenance"]["manual"] is True
