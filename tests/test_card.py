import json

import pytest
from huggingface_hub import ModelCard

from rl import card
from rl.config import load_config, to_dict

EVALUATION = {"samples": 200, "gIoU": 0.2494, "cIoU": 0.1446, "Acc@0.5": 0.1131,
              "Acc@0.8": 0.006, "parse_failures": 1, "refinement_rounds": 1,
              "intervals": {"gIoU": [0.2252, 0.2736], "cIoU": [0.1296, 0.1617],
                            "Acc@0.5": [0.0893, 0.1369]}}


def run_config() -> dict:
    return to_dict(load_config(None, {"output_dir": "runs/demo_run"}))


def test_header_is_what_the_hub_reads():
    text = card.card_text(run_config(), "grpo_stage2", EVALUATION)
    parsed = ModelCard(text)
    data = parsed.data
    assert data.library_name == "transformers" and data.pipeline_tag == "image-text-to-text"
    assert data.license == "apache-2.0" and "getok" in data.tags
    assert data.base_model is None  # the tiny model has no Hub origin
    got = {r.metric_name: r.metric_value for r in data.eval_results}
    assert got == {"gIoU": 0.2494, "cIoU": 0.1446, "Acc@0.5": 0.1131, "Acc@0.8": 0.006}
    assert {r.dataset_split for r in data.eval_results} == {"held-out"}
    assert data.model_name == "getok-demo_run-grpo_stage2"


def test_body_says_vocabulary_recipe_data_results_and_use():
    cfg = run_config()
    text = card.card_text(cfg, "grpo_stage1", EVALUATION)
    g = cfg["model"]["grid_size"]
    assert f"{g}x{g} grid tokens" in text and "9 offset tokens" in text
    assert f"{cfg['grpo_stage1']['max_steps']} steps" in text
    assert "offset-token refinement" not in text.split("## Training")[1].split("## Data")[0]
    assert "| gIoU | 24.9 | [22.5, 27.4] |" in text
    assert f"{cfg['data']['n_train']} training scenes" in text
    assert 'Grounder("path/to/this/folder")' in text and "python -m rl.infer" in text
    assert "training scenes:" not in text  # one mix for every split
    cfg["data"]["train_kinds"] = {"attribute": 0.5, "superlative": 0.5}
    text = card.card_text(cfg, "grpo_stage1", EVALUATION)
    assert "(training scenes: attribute 0.5, superlative 0.5)" in text
    assert "superlative words in training" not in text
    cfg["data"]["train_superlatives"] = {"largest": 4, "smallest": 4, "leftmost": 1}
    text = card.card_text(cfg, "grpo_stage1", EVALUATION)
    assert "superlative words in training: largest 4, smallest 4, leftmost 1." in text
    cfg["data"]["train_superlative_twins"] = ["largest", "smallest"]
    text = card.card_text(cfg, "grpo_stage1", EVALUATION)
    assert "training rows of largest, smallest twinned with the opposite word." in text


def test_card_before_evaluation_and_for_a_hub_base(tmp_path):
    cfg = run_config()
    local = tmp_path / "qwen"
    local.mkdir()
    (local / "config.json").write_text(json.dumps({"_name_or_path": "Qwen/Qwen2.5-VL-3B-Instruct"}))
    cfg["model"]["path"] = str(local)
    data = ModelCard(card.card_text(cfg, "sft", None)).data
    assert data.base_model == "Qwen/Qwen2.5-VL-3B-Instruct" and data.eval_results is None
    assert "Not evaluated yet." in card.card_text(cfg, "sft", None)


def test_cli_writes_the_card_and_names_what_is_missing(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "grpo_stage1").mkdir(parents=True)
    with pytest.raises(SystemExit, match="config.json: not found"):
        card.main([str(run_dir / "grpo_stage1")])
    (run_dir / "config.json").write_text(json.dumps(run_config()))
    (run_dir / "grpo_stage1" / "stage.json").write_text(json.dumps({"evaluation": EVALUATION}))
    path = card.main([str(run_dir / "grpo_stage1")])
    assert path == run_dir / "grpo_stage1" / "README.md"
    assert ModelCard.load(path).data.eval_results[0].metric_value == 0.2494


def test_push_uploads_the_folder_with_its_card(tmp_path, monkeypatch):
    # The Hub is not reachable here: the two calls push_to_hub makes are recorded instead.
    calls = []

    class Api:
        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw))

        def upload_folder(self, **kw):
            calls.append(("upload_folder", kw))
            return "https://huggingface.co/you/model/commit/0"

    monkeypatch.setattr("huggingface_hub.HfApi", Api)
    card.push_to_hub(tmp_path, "you/model")
    assert calls[0] == ("create_repo", "you/model", {"private": True, "exist_ok": True})
    assert calls[1][1]["folder_path"] == str(tmp_path) and calls[1][1]["repo_id"] == "you/model"


def test_card_says_when_stage2_trained_only_the_refinement_rows():
    rows = "trains only the embedding rows of the offset tokens and <DELETE>"
    assert rows not in card.card_text(run_config(), "grpo_stage2", EVALUATION)
    cfg = to_dict(load_config(None, {"grpo_stage2": {"trainable": "refinement_tokens"}}))
    text = card.card_text(cfg, "grpo_stage2", EVALUATION)
    assert text.count(rows) == 1 and rows not in card.card_text(cfg, "grpo_stage1", EVALUATION)
