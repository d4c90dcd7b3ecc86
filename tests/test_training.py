"""Short runs of every stage on the tiny model: weights move, rewards see their columns, the
logged reward terms carry the config names, and a finished stage is skipped on resume."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from small_recipe import small

import rl.grpo
from rl.config import load_config
from rl.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]


def tiny_overrides(out: Path) -> dict:
    return small({
        "output_dir": str(out), "logging_steps": 1, "progress_bars": False,
        # The mechanics on the easy task (one shape, 8-grid, every record with a refinement
        # dialogue), where 150 cold-start steps give stage 2 instances to refine.
        "model": {"grid_size": 8},
        "data": {"n_train": 160, "n_eval": 16, "objects": [1, 1], "train_objects": None,
                 "kinds": {"attribute": 1.0, "replace": True}, "distractors": "any",
                 "prompts": str(ROOT / "configs" / "default_prompts.yaml")},
        "sft": {"max_steps": 150, "refinement_share": 1.0, "policy_refinement_steps": 10,
                "policy_refinement_records": 16, "policy_refinement_learning_rate": 2e-4},
        "grpo_stage1": {"max_steps": 3, "n_prompts": 16, "temperature": 1.3,
                        "logging_steps": 1},
        "grpo_stage2": {"max_steps": 2, "n_prompts": 8, "temperature": 1.3,
                        "logging_steps": 1},
        "eval": {"pictures": 2, "curve_every": 50, "curve_samples": 4, "reward_prompts": 3,
                 "reward_samples": 2, "refinement_reward_prompts": 3},
    }, keep_parts=True)


def weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def changed(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if k in b)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    seen: dict[str, set] = {}
    original = rl.grpo.build_reward_funcs

    def with_spy(stage, vocab, decoder, stage_name, codec=None):
        funcs, w = original(stage, vocab, decoder, stage_name, codec)

        def spy(completions, **kwargs):
            seen.setdefault(stage_name, set()).update(kwargs)
            return [0.0] * len(completions)

        spy.__name__ = "spy"
        return funcs + [spy], w + [0.0]

    rl.grpo.build_reward_funcs = with_spy
    try:
        metrics = Pipeline(load_config(ROOT / "configs" / "default.yaml",
                                       tiny_overrides(out))).run()
    finally:
        rl.grpo.build_reward_funcs = original
    return out, metrics, seen


def test_second_pass_runs_at_its_own_learning_rate(run):
    out, _, _ = run
    hist = json.loads((out / "sft" / "stage.json").read_text())["log_history"]
    rates = {e["step"]: e["learning_rate"] for e in hist if "learning_rate" in e}
    first = [r for s, r in rates.items() if s <= 150]
    second = [r for s, r in rates.items() if s > 150]
    assert max(first) == pytest.approx(1e-3, rel=0.05) and second
    assert max(second) == pytest.approx(2e-4, rel=0.05)


def test_every_stage_moves_the_weights(run):
    out, _, _ = run
    init, sft = weights(out / "model_init"), weights(out / "sft")
    s1, s2 = weights(out / "grpo_stage1"), weights(out / "grpo_stage2")
    assert changed(init, sft) and changed(sft, s1) and changed(s1, s2)
    # The new token rows are trained in the cold start.
    emb = "model.language_model.embed_tokens.weight"
    key = emb if emb in init else next(k for k in init if k.endswith("embed_tokens.weight"))
    assert not torch.equal(init[key][-100:], sft[key][-100:])


def test_the_kl_reference_is_the_policy_each_stage_starts_from(run):
    # TRL loads its reference from model.config._name_or_path; for a policy trained earlier in
    # the same process that named the untrained init (measured KL ~5.8 from the first step).
    out, _, _ = run
    for stage in ("grpo_stage1", "grpo_stage2"):
        hist = json.loads((out / stage / "stage.json").read_text())["log_history"]
        first = next(e["kl"] for e in hist if "kl" in e)
        assert first < 1e-3, (stage, first)  # step 1: policy == reference


def test_rewards_receive_their_columns(run):
    _, _, seen = run
    assert {"image", "solution"} <= seen["grpo_stage1"]
    assert {"image", "solution", "stage1", "refinement"} <= seen["grpo_stage2"]


def test_logged_reward_terms_match_the_config(run):
    out, metrics, _ = run
    cfg = load_config(ROOT / "configs" / "default.yaml")
    for stage in ("grpo_stage1", "grpo_stage2"):
        hist = json.loads((out / stage / "stage.json").read_text())["log_history"]
        logged = {k.split("/")[1] for e in hist for k in e
                  if k.startswith("rewards/") and k.endswith("/mean")}
        assert logged == set(getattr(cfg, stage).rewards) | {"spy"}
    assert set(metrics["evaluation"]) == {"untrained", "sft", "grpo_stage1", "grpo_stage2"}
    assert (out / "metrics.json").is_file() and list((out / "plots").glob("grpo_stage1_*.png"))
    assert len(list((out / "pictures").glob("[0-9]*.png"))) == 2


def test_stage1_reward_on_fixed_prompts_before_and_after(run, capsys):
    out, metrics, seen = run
    fixed = metrics["rewards"]["grpo_stage1"]["fixed_prompts"]
    assert (fixed["prompts"], fixed["per_prompt"], fixed["samples"]) == (3, 2, 3)
    assert fixed["difference"] == pytest.approx(fixed["after"] - fixed["before"])
    assert 0 <= fixed["before"] <= 4.5 and 0 <= fixed["after"] <= 4.5  # default weights' range
    assert "prompts" in seen["grpo_stage1"]  # scored by the stage's own reward functions


def test_stage2_reward_on_fixed_prompts_before_and_after(run):
    _, metrics, _ = run
    fixed = metrics["rewards"]["grpo_stage2"]["fixed_prompts"]
    assert (fixed["prompts"], fixed["per_prompt"], fixed["samples"]) == (3, 2, 3)
    assert fixed["difference"] == pytest.approx(fixed["after"] - fixed["before"])
    # refine_format [0, 1] + point_refine, box_refine, mask_gain [-1, 1] each (weights 1)
    assert -3 <= fixed["before"] <= 4 and -3 <= fixed["after"] <= 4


def test_finished_stages_are_skipped_on_resume(run, capsys):
    out, metrics, _ = run
    again = Pipeline(load_config(ROOT / "configs" / "default.yaml", tiny_overrides(out))).run()
    printed = capsys.readouterr().out
    assert "sft: done already" in printed and "grpo_stage2: done already" in printed
    assert again["evaluation"]["grpo_stage1"] == metrics["evaluation"]["grpo_stage1"]


def test_learning_curves_cover_every_stage(run):
    out, metrics, _ = run
    points = json.loads((out / "curves.json").read_text())
    assert [(p["stage"], p["step"]) for p in points] == [
        ("sft", 50), ("sft", 100), ("sft", 150), ("sft", 160), ("grpo_stage1", 3),
        ("grpo_stage2", 2)]
    assert all(0 <= p["gIoU"] <= 1 for p in points)
    assert (out / "plots" / "curves.png").is_file() and metrics["seconds"]["curves"] > 0


def test_shuffled_expression_control_and_captioned_pictures(run):
    out, metrics, _ = run
    control = metrics["controls"]["shuffled_expression"]
    assert control["samples"] == 16 and control["model"] == "grpo_stage2"
    real = metrics["evaluation"]["grpo_stage2"]
    assert "referent_accuracy" in real
    # Paired over the same single-target rows: the difference of the two accuracies.
    gap = metrics["controls"]["real_minus_shuffled_referent"]
    assert 0 < gap["samples"] <= 16
    assert gap["difference"] == pytest.approx(real["referent_accuracy"]
                                              - control["referent_accuracy"])
    # The retargeted control (the held-out rows are synthetic scenes): the same rows, a reader's
    # rate per single-target row, and accuracy minus that rate row by row.
    retargeted = metrics["controls"]["retargeted_expression"]
    assert retargeted["samples"] == 16 and retargeted["model"] == "grpo_stage2"
    d = retargeted["minus_reader_rate"]
    assert d["samples"] == retargeted["referent_samples"]
    assert d["difference"] == pytest.approx(retargeted["referent_accuracy"]
                                            - retargeted["reader_rate"])
    assert 0 < retargeted["reader_rate"] <= 1
    gap = metrics["controls"]["real_minus_retargeted_referent"]
    assert gap["difference"] == pytest.approx(real["referent_accuracy"]
                                              - retargeted["referent_accuracy"])
    assert len(list((out / "pictures").glob("[0-9]*.png"))) == 2
    # One contact sheet per evaluated stage: the 8 best and the 8 worst of 16, four to a row
    # (the layout: tests/test_visualize.py).
    sheets = {p.stem.removeprefix("sheet_") for p in (out / "pictures").glob("sheet_*.png")}
    assert sheets == set(metrics["evaluation"])
    from PIL import Image

    with Image.open(out / "pictures" / "sheet_grpo_stage2.png") as sheet:
        assert sheet.width >= 4 * 224 and sheet.height >= 4 * 224  # 4x4 tiles of 112 px x 2


def test_stage2_is_one_on_policy_trainer_with_signal_shares_logged(run):
    out, metrics, _ = run
    hist = json.loads((out / "grpo_stage2" / "stage.json").read_text())["log_history"]
    assert [e["step"] for e in hist if "reward" in e] == [1, 2]  # one trainer, steps 1..2
    logged = {k for e in hist for k in e}
    assert {"point_refine/nonzero", "box_refine/nonzero", "mask_gain/nonzero",
            "refine_format/complete"} <= logged
    assert "point_refine/nonzero" in metrics["rewards"]["grpo_stage2"]
    chosen = metrics["stage2_prompts"]  # the default recipe's grpo_stage2.prompts: proposed
    assert chosen["candidates"] == 8
    assert chosen["kept"] + chosen["left_out"]["no instance proposed"] == 8
    entries = [e for e in hist if "reward" in e]
    # The share of groups without reward variance (no advantage), as TRL logged it.
    zero = metrics["rewards"]["grpo_stage2"]["frac_reward_zero_std"]
    assert zero["first_fifth"] == pytest.approx(entries[0]["frac_reward_zero_std"])
    assert zero["last_fifth"] == pytest.approx(entries[-1]["frac_reward_zero_std"])
    first = metrics["rewards"]["grpo_stage2"]["reward/with_proposal"]["first_fifth"]
    share = 1.0 - entries[0]["refine_format/no_proposal"]  # 2 steps: a fifth is one entry
    if share > 0:
        assert first == pytest.approx(entries[0]["reward"] / share)


def test_stage2_reward_over_samples_with_a_proposal():
    # Stage 2's logged reward counts an empty proposal's samples as 0; the summary also gives
    # the mean over the samples with a proposal: per fifth, summed reward / summed share.
    from types import SimpleNamespace

    from rl.pipeline import Pipeline

    hist = [{"reward": r, "refine_format/no_proposal": p, "step": i,
             "frac_reward_zero_std": 0.5 + 0.1 * i}
            for i, (r, p) in enumerate([(1.0, 0.5), (0.9, 0.1), (1.2, 0.0), (1.0, 0.0),
                                        (0.6, 0.5), (1.5, 0.25)])]
    holder = SimpleNamespace(metrics={"rewards": {}})
    out = Pipeline.reward_summary(holder, "grpo_stage2", hist)
    assert out["reward"]["first_fifth"] == pytest.approx(1.0)  # fifth of 6 entries: 1 entry
    assert out["reward/with_proposal"]["first_fifth"] == pytest.approx(1.0 / 0.5)
    assert out["reward/with_proposal"]["last_fifth"] == pytest.approx(1.5 / 0.75)
    assert out["frac_reward_zero_std"] == {"first_fifth": pytest.approx(0.5),
                                           "last_fifth": pytest.approx(1.0)}
    # Stage 1 (no `refine_format/no_proposal`) has no such entry.
    stage1 = Pipeline.reward_summary(holder, "grpo_stage1", [{"reward": 1.0}] * 5)
    assert "reward/with_proposal" not in stage1


def test_rounds_curve_and_stage_comparisons(run):
    _, metrics, _ = run
    curve = metrics["rounds_curve"]["curve"]
    assert [c["rounds"] for c in curve] == [0, 1, 2, 3]
    # Round 1 of the curve is the stage's own evaluation (one refinement round, greedy).
    final = metrics["evaluation"]["grpo_stage2"]
    assert final["refinement_rounds"] == 1 and curve[1]["gIoU"] == final["gIoU"]
    c = metrics["comparisons"]["grpo_stage2 - grpo_stage1"]
    assert c["rounds"] == {"grpo_stage2": 1, "grpo_stage1": 0} and c["samples"] == 16
    assert np.isclose(c["difference"], final["gIoU"] - metrics["evaluation"]["grpo_stage1"]["gIoU"])
    assert c["interval"][0] <= c["difference"] <= c["interval"][1]
    assert set(metrics["comparisons"]) == {"grpo_stage1 - sft", "grpo_stage2 - grpo_stage1"}


def test_every_checkpoint_folder_has_its_model_card(run):
    from huggingface_hub import ModelCard

    out, metrics, _ = run
    for stage in ("sft", "grpo_stage1", "grpo_stage2"):
        data = ModelCard.load(out / stage / "README.md").data
        giou = next(r.metric_value for r in data.eval_results if r.metric_name == "gIoU")
        assert giou == round(metrics["evaluation"][stage]["gIoU"], 4), stage


def test_every_stage_reports_to_tensorboard(run):
    # The default recipe's report_to: [tensorboard]: each stage's event files hold its training
    # logs (each reward term of a GRPO stage), its held-out figures, and the completion tables.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, metrics, _ = run
    cfg = load_config(ROOT / "configs" / "default.yaml")
    for stage in ("sft", "grpo_stage1", "grpo_stage2"):
        scalars, texts = {}, set()
        for folder in (out / stage / "trainer" / "runs").iterdir():
            events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
            events.Reload()
            for tag in events.Tags()["scalars"]:
                scalars[tag] = [e.value for e in events.Scalars(tag)]
            texts |= set(events.Tags()["tensors"])
        assert "train/loss" in scalars, stage
        giou = scalars["test/gIoU"]
        assert giou == [pytest.approx(metrics["evaluation"][stage]["gIoU"], abs=1e-6)], stage
        if stage.startswith("grpo"):
            for term in getattr(cfg, stage).rewards:
                assert f"train/rewards/{term}/mean" in scalars, (stage, term)
            assert "completions/text_summary" in texts, stage
            assert list((out / stage / "trainer" / "completions").glob("*.parquet"))


def test_reading_summary_line():
    from rl.pipeline import reading_summary

    m = {"gIoU": 0.3, "intervals": {"gIoU": [0.2, 0.4]}, "referent_accuracy": 0.4,
         "referent_interval": [0.3, 0.5], "chance": 0.35, "no_target_accuracy": 0.1,
         "referent_by_kind": {"attribute": {"referent_accuracy": 0.5, "chance": 0.3,
                                            "samples": 3}}}
    assert reading_summary(m) == (
        "gIoU 0.300 [0.200, 0.400]; referent accuracy 0.400 [0.300, 0.500] (chance 0.350; "
        "per kind accuracy/chance: attribute 0.50/0.30); N-acc 0.100")
    assert reading_summary({"gIoU": 0.5}) == "gIoU 0.500"
    words = {**m, "referent_by_superlative": {"largest": {"referent_accuracy": 0.75},
                                              "smallest": {"referent_accuracy": 0.25}}}
    assert "attribute 0.50/0.30); superlatives by word: largest 0.75, smallest 0.25; " in (
        reading_summary(words))
    # The same over the rows that picked an object (a declined answer picks none).
    m.update(picked_share=0.5, referent_accuracy_picked=0.6, chance_picked=0.34)
    m["referent_by_kind"]["attribute"].update(referent_accuracy_picked=0.7, chance_picked=0.33)
    assert reading_summary(m).endswith(
        "attribute 0.50/0.30); where an object was picked (50 % of rows): 0.600 (chance 0.340; "
        "per kind: attribute 0.70/0.33); N-acc 0.100")


def test_fused_head_scores_labelled_positions_only_with_the_same_loss(tiny_model_dirs,
                                                                      monkeypatch):
    # rl.training.score_labelled_positions_only: TRL's fused LM head on a CPU projects only the
    # positions with a label; loss, per-token outputs and gradients match TRL's own CPU path
    # (every position projected, then masked) up to float rounding.
    import trl.kernels.chunked_logprob as kernels
    import trl.trainer.utils as trl_utils
    from transformers import AutoModelForImageTextToText
    from trl.trainer.utils import add_fused_lm_head

    from rl.training import score_labelled_positions_only

    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dirs["untied"]).float()
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    ids = torch.randint(0, model.config.get_text_config().vocab_size, (3, 40))
    labels = ids.clone()
    labels[:, :30] = -100  # a prompt of 30 positions, then the completion
    labels[2, 36:] = -100  # and padding

    def loss_and_grads():
        model.zero_grad()
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels,
                    fused_lm_head=True)
        out.loss.backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters()
                     if p.grad is not None}

    monkeypatch.setattr(trl_utils, "_use_triton", kernels._use_triton)
    assert not trl_utils._use_triton(torch.device("cpu"))
    full, full_grads = loss_and_grads()
    score_labelled_positions_only()
    score_labelled_positions_only()  # idempotent: wraps once
    assert trl_utils._use_triton(torch.device("cpu"))
    assert trl_utils._use_triton.getok_cpu_compact is kernels._use_triton
    compact, compact_grads = loss_and_grads()
    score_labelled_positions_only(False)  # a recipe's score_labelled_only: false
    assert trl_utils._use_triton is kernels._use_triton
    again, _ = loss_and_grads()
    assert torch.equal(again.loss, full.loss)  # TRL's own path: bit for bit

    torch.testing.assert_close(compact.loss, full.loss, rtol=1e-6, atol=1e-6)
    for field in ("log_probs", "entropy", "is_top1"):
        a, b = getattr(compact, field), getattr(full, field)
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-5, atol=1e-5)
        assert not a[:, :29].any()  # nothing on the prompt's positions
    assert compact_grads.keys() == full_grads.keys() and len(full_grads) > 10
    for name, g in full_grads.items():
        torch.testing.assert_close(compact_grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_vision_frozen_freezes_the_tower_and_restores_it(tiny_model_dirs):
    from transformers import AutoModelForImageTextToText

    from rl.training import vision_frozen

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dirs["tied"])
    tower = list(model.model.visual.parameters())
    rest = [q for n, q in model.named_parameters() if ".visual." not in f".{n}"]
    with vision_frozen(model):
        assert not any(q.requires_grad for q in tower)
        assert all(q.requires_grad for q in rest)
    assert all(q.requires_grad for q in tower)
    with vision_frozen(model, enabled=False):
        assert all(q.requires_grad for q in tower)
    with pytest.raises(ValueError, match="no vision tower"):
        with vision_frozen(torch.nn.Linear(2, 2)):
            pass


def test_vision_frozen_merger_freezes_only_the_patch_merger(tiny_model_dirs):
    from transformers import AutoModelForImageTextToText

    from rl.training import vision_frozen

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dirs["tied"])
    merger = {id(q) for q in model.model.visual.merger.parameters()}
    blocks = [q for q in model.model.visual.parameters() if id(q) not in merger]
    assert merger and blocks
    with vision_frozen(model, "merger"):
        for name, q in model.named_parameters():
            assert q.requires_grad == (id(q) not in merger), name
    assert all(q.requires_grad for q in model.parameters())
    with pytest.raises(ValueError, match="expected True, False or 'merger'"):
        with vision_frozen(model, "blocks"):
            pass


def test_freeze_vision_values_are_checked():
    from rl.config import ConfigError, load_config

    assert load_config(None, {"sft": {"freeze_vision": "merger"}}).sft.freeze_vision == "merger"
    with pytest.raises(ConfigError, match="sft.freeze_vision: expected true, false or merger"):
        load_config(None, {"sft": {"freeze_vision": "tower"}})


def test_vision_lr_scale_gives_the_tower_its_own_rate(tiny_model_dirs, tmp_path):
    from transformers import AutoModelForImageTextToText, Trainer, TrainingArguments

    from rl.training import optimizer_with_vision_scale

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dirs["tied"])
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, weight_decay=0.1,
                             report_to=[])
    trainer = Trainer(model=model, args=args,
                      optimizer_cls_and_kwargs=optimizer_with_vision_scale(model, args, 0.1))
    groups = trainer.create_optimizer().param_groups
    tower = {id(q) for q in model.model.visual.parameters()}
    rate = {id(q): g["lr"] for g in groups for q in g["params"]}
    decay = {id(q): g["weight_decay"] for g in groups for q in g["params"]}
    names = dict(model.named_parameters())
    decayed = set(trainer.get_decay_parameter_names(model))  # as the trainer's own groups
    assert 0 < len(decayed) < len(names)
    assert len(rate) == sum(len(g["params"]) for g in groups) == len(names)  # each once
    for name, q in names.items():
        assert rate[id(q)] == pytest.approx(1e-4 if id(q) in tower else 1e-3), name
        assert decay[id(q)] == (0.1 if name in decayed else 0.0), name


def test_fixed_prompt_rewards_are_measured_in_single_process_runs_only(tmp_path, monkeypatch,
                                                                      capsys):
    cfg = load_config(ROOT / "configs" / "default.yaml", {
        "output_dir": str(tmp_path),
        "data": {"prompts": str(ROOT / "configs" / "default_prompts.yaml")}})
    assert cfg.eval.reward_prompts and cfg.eval.refinement_reward_prompts
    monkeypatch.setenv("WORLD_SIZE", "2")
    for stage in ("grpo_stage1", "grpo_stage2"):
        assert Pipeline(cfg)._fixed_prompt_rewards(None, [{}], stage) is None
        assert f"{stage}'s reward on fixed prompts is measured in single-process runs only" in (
            capsys.readouterr().out)


def test_stage2_keeps_the_prompts_its_policy_proposes_for(tmp_path, monkeypatch, capsys):
    # grpo_stage2.prompts: proposed: the starting policy's greedy proposal on each candidate
    # prompt (scripted here), and only the prompts with an instance kept, in their order.
    import rl.evaluate

    cfg = load_config(ROOT / "configs" / "default.yaml", {
        "output_dir": str(tmp_path), "grpo_stage2": {"prompts": "proposed"},
        "data": {"prompts": str(ROOT / "configs" / "default_prompts.yaml")}})
    pipe = Pipeline(cfg)
    grid = pipe.vocab.grid_token
    answers = [f"<think></think><answer>\n<seg>{grid(1, 2)}</seg>\n</answer>",
               "<think></think><answer></answer>",  # "no target": nothing to refine
               "not an answer at all",
               f"<answer>\n<box>{grid(0, 0)}{grid(3, 3)}</box>\n</answer>"]
    rows = [{"prompt": [{"role": "user", "content": f"q{i}"}], "image": None, "id": i}
            for i in range(4)]
    calls = []

    def scripted(model, processor, convs, images, max_new_tokens=64, batch_size=32, **kw):
        calls.append((max_new_tokens, batch_size, kw))
        assert list(convs) == [r["prompt"] for r in rows]
        return list(answers)

    monkeypatch.setattr(rl.evaluate, "generate", scripted)
    policy = torch.nn.Linear(1, 1)  # a module whose train / eval mode the pass must restore
    kept = pipe._proposed_rows(policy, rows)
    assert [r["id"] for r in kept] == [0, 3] and policy.training  # its mode restored
    assert calls == [(cfg.grpo_stage1.max_completion_length, cfg.eval.batch_size, {})]  # greedy
    assert pipe.metrics["stage2_prompts"] == {"candidates": 4, "kept": 2,
                                              "left_out": {"no instance proposed": 2}}
    assert "2 of 4 prompts have a proposal to refine" in capsys.readouterr().out
    # A policy that proposes for none leaves every prompt in, and says so.
    answers[:] = ["<answer></answer>"] * 4
    policy.eval()
    assert pipe._proposed_rows(policy, rows) == rows and not policy.training
    assert "proposes no instance on any of its 4 prompts" in capsys.readouterr().out
