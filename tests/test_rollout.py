"""On-policy stage 2 (rl.rollout): a scripted policy's proposals and refinements reach the
rewards sample by sample, the dialogue tail is context (env_mask 0), one trainer and one
optimizer state serve the whole stage."""

import json

import pytest

from rl.data.referring import synthetic_records
from rl.data.samples import BuildConfig, build_grpo_stage1, load_prompts
from rl.rollout import Generated, RefinementRollout, cut_at_eos
from tokens import SpatialVocab

V8 = SpatialVocab(8)
PROMPTS = {**load_prompts(), "stage2": "Refine with offsets."}


def rows_with_boxes(n=4):
    recs = list(synthetic_records(n, seed=3, objects=(1, 1), kinds={"attribute": 1.0}))
    return list(build_grpo_stage1(recs, PROMPTS, BuildConfig(vocab=V8)))


def gt_box_cells(row):
    """The grid cells of the row's ground-truth box corners (a proposal the script writes)."""
    sol = json.loads(row["solution"])
    x1, y1, x2, y2 = sol["instances"][0]["box"]
    w, h = sol["size"]
    return V8.point_to_cell(x1 / w, y1 / h), V8.point_to_cell(x2 / w, y2 / h)


class Script:
    """A scripted policy: for the expression it finds in a prompt, a fixed proposal (greedy
    calls) and a fixed refinement (sampled calls); records every call."""

    def __init__(self, tokenizer, rows):
        self.tok = tokenizer
        self.calls = []
        self.proposal, self.refinement = {}, {}
        for k, row in enumerate(rows):
            expr = row["expression"]
            a, b = gt_box_cells(row)
            self.proposal[expr] = (f"<answer>\n<box>{V8.grid_token(*a)}{V8.grid_token(*b)}"
                                   f"</box><seg>{V8.grid_token(*a)}</seg>\n</answer>")
            op = "<off_0_0>" if k % 2 else "<DELETE>"
            self.refinement[expr] = (f"<answer>\n<offset><box><off_0_0><off_0_0></box><seg>{op}"
                                     f"</seg></offset>\n</answer>")

    def expression(self, ids):
        text = self.tok.decode(ids)
        return next(e for e in sorted(self.proposal, key=len, reverse=True) if e in text)

    def __call__(self, trainer, encoded, greedy, max_new_tokens):
        self.calls.append((greedy, len(encoded)))
        table = self.proposal if greedy else self.refinement
        eos = trainer.eos_token_ids[0]
        return Generated([self.tok(table[self.expression(e["input_ids"])],
                                   add_special_tokens=False)["input_ids"] + [eos]
                          for e in encoded])


@pytest.fixture(scope="module")
def scripted(grid8_model, tmp_path_factory):
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import rl.grpo
    from rl.config import GRPOStageConfig
    from rl.context import RunContext
    from rl.grpo import grpo_trainer
    from tokens import GridCodec
    from tokens.decoders import RegionDecoder

    rows = rows_with_boxes()
    proc = AutoProcessor.from_pretrained(grid8_model)
    model = AutoModelForImageTextToText.from_pretrained(grid8_model)
    seen = []

    def record(prompts, completions, **kwargs):
        seen.append({k: list(kwargs[k]) for k in ("stage1", "refinement")}
                    | {"prompts": prompts})
        return [0.0] * len(completions)

    stage = GRPOStageConfig(max_steps=3, batch_size=8, num_generations=4, learning_rate=1e-3,
                            max_completion_length=24, beta=0.0,
                            rewards={"refine_format": 1.0, "point_refine": 1.0})
    ctx = RunContext(vocab=V8, codec=GridCodec(V8), decoder_spec=RegionDecoder(),
                     processor=proc, prompts=PROMPTS,
                     output_dir=tmp_path_factory.mktemp("rollout"), logging_steps=1)
    script = Script(proc.tokenizer, rows)
    rollout = RefinementRollout(PROMPTS["stage2"], proposal_tokens=24, generate=script)
    ds = Dataset.from_list(rows).select_columns(["image", "prompt", "solution"])
    original = rl.grpo.build_reward_funcs

    def with_recorder(*args, **kwargs):
        funcs, weights = original(*args, **kwargs)
        record.__name__ = "record"
        return funcs + [record], weights + [0.0]

    rl.grpo.build_reward_funcs = with_recorder
    try:
        trainer = grpo_trainer(stage, "grpo_stage2", ctx, model, ds, rollout_func=rollout)
    finally:
        rl.grpo.build_reward_funcs = original
    trainer.train()
    return trainer, script, rows, seen


def test_scripted_proposals_and_refinements_reach_the_rewards_per_sample(scripted):
    trainer, script, rows, seen = scripted
    assert len(seen) == 3  # one reward batch per step
    for batch in seen:
        for prompt, s1, ref in zip(batch["prompts"], batch["stage1"], batch["refinement"],
                                   strict=True):
            text = " ".join(p.get("text") or "" for m in prompt for p in m["content"])
            expr = next(e for e in sorted(script.proposal, key=len, reverse=True) if e in text)
            assert s1 == script.proposal[expr] and ref == script.refinement[expr]
    # One greedy proposal per distinct prompt (2 prompts x 4 generations per step), then one
    # sampled refinement per entry.
    assert script.calls[:2] == [(True, 2), (False, 8)]


def test_rewards_score_the_scripted_refinements(scripted):
    trainer, _, _, _ = scripted
    hist = [e for e in trainer.state.log_history if "rewards/refine_format/mean" in e]
    # Every scripted refinement is well-formed; a kept corner point (inside the object's box,
    # possibly outside the shape) and a deleted one score per point_refine's rules.
    assert all(e["rewards/refine_format/mean"] == 1.0 for e in hist)
    assert all(e["refine_format/complete"] == 1.0 for e in hist)
    assert all("point_refine/nonzero" in e for e in hist)


def test_one_optimizer_state_for_the_whole_stage(scripted):
    trainer, _, _, _ = scripted
    steps = {int(s["step"]) for s in trainer.optimizer.state.values()}
    assert steps == {3} and trainer.state.global_step == 3


def test_the_dialogue_tail_is_context_and_the_refinement_is_trained(grid8_model):
    from transformers import AutoProcessor
    from trl.data_utils import prepare_multimodal_messages

    proc = AutoProcessor.from_pretrained(grid8_model)
    rows = rows_with_boxes(2)
    script = Script(proc.tokenizer, rows)

    class Trainer:  # the attributes the rollout reads from TRL's GRPOTrainer
        processing_class = proc
        chat_template_kwargs = {}
        eos_token_ids = [proc.tokenizer.convert_tokens_to_ids("<|im_end|>")]
        max_completion_length = 24

    prompts = [prepare_multimodal_messages(r["prompt"], images=[r["image"]])
               for r in rows for _ in range(2)]
    out = RefinementRollout(PROMPTS["stage2"], 24, generate=script)(prompts, Trainer())
    tok = proc.tokenizer
    for k, (ids, mask) in enumerate(zip(out["completion_ids"], out["env_mask"], strict=True)):
        n_ctx = mask.index(1)
        context, trained = tok.decode(ids[:n_ctx]), tok.decode(ids[n_ctx:])
        assert out["stage1"][k] in context and PROMPTS["stage2"] in context
        assert trained.startswith(out["refinement"][k]) and set(mask[n_ctx:]) == {1}
        # The prompt plus the completion is the stage-2 dialogue as evaluation renders it.
        full = proc.apply_chat_template(
            prompts[k] + [{"role": "assistant", "content": [{"type": "text",
                                                             "text": out["stage1"][k]}]},
                          {"role": "user", "content": [{"type": "text",
                                                        "text": PROMPTS["stage2"]}]}],
            add_generation_prompt=True, tokenize=False)
        assert tok.decode(out["prompt_ids"][k] + ids[:n_ctx]).endswith(
            full.split("<|vision_end|>")[-1])


def test_vllm_is_refused_with_a_clear_message():
    class Trainer:
        use_vllm = True

    with pytest.raises(ValueError, match="vLLM is not wired"):
        RefinementRollout("Refine.", 8)([[{"role": "user", "content": "x"}]], Trainer())


def test_cut_at_eos():
    assert cut_at_eos([5, 6, 2, 7], eos_ids=[2], pad_id=0) == [5, 6, 2]
    assert cut_at_eos([5, 0, 0], eos_ids=[2], pad_id=0) == [5]
    assert cut_at_eos([5, 6], eos_ids=[2], pad_id=None) == [5, 6]


def test_anchored_proposals_carry_the_loss_and_the_request_does_not(grid8_model):
    from transformers import AutoProcessor
    from trl.data_utils import prepare_multimodal_messages

    proc = AutoProcessor.from_pretrained(grid8_model)
    rows = rows_with_boxes(1)

    class Trainer:
        processing_class = proc
        chat_template_kwargs = {}
        eos_token_ids = [proc.tokenizer.convert_tokens_to_ids("<|im_end|>")]
        max_completion_length = 24

    prompts = [prepare_multimodal_messages(rows[0]["prompt"], images=[rows[0]["image"]])]
    out = RefinementRollout(PROMPTS["stage2"], 24, generate=Script(proc.tokenizer, rows),
                            anchor_proposal=True)(prompts, Trainer())
    ids, mask = out["completion_ids"][0], out["env_mask"][0]
    n_own = mask.index(0)
    n_ctx = n_own + mask[n_own:].index(1)
    tok = proc.tokenizer
    assert tok.decode(ids[:n_own]).startswith(out["stage1"][0])
    assert PROMPTS["stage2"] in tok.decode(ids[n_own:n_ctx])
    assert tok.decode(ids[n_ctx:]).startswith(out["refinement"][0])
    assert set(mask[n_ctx:]) == {1}


class Alternating(Script):
    """The script's proposals; each sampled refinement keeps (`<off_0_0>`) or deletes the
    proposal's point by the entry's parity, so a group's refinements score differently."""

    def __call__(self, trainer, encoded, greedy, max_new_tokens):
        if greedy:
            return super().__call__(trainer, encoded, greedy, max_new_tokens)
        eos = trainer.eos_token_ids[0]
        texts = [f"<answer>\n<offset><box><off_0_1><off_0_0></box><seg>"
                 f"{'<DELETE>' if k % 2 else '<off_0_0>'}</seg></offset>\n</answer>"
                 for k in range(len(encoded))]
        return Generated([self.tok(t, add_special_tokens=False)["input_ids"] + [eos]
                          for t in texts])


def test_stage2_trained_on_refinement_rows_keeps_every_other_weight(grid8_model, tmp_path):
    """`trainable: refinement_tokens`: after a stage 2 with a real signal the checkpoint
    differs from its start only in the offset and <DELETE> rows (tied head and embeddings
    still one matrix), so a proposal is scored as before; the model trains everything again
    afterwards."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from rl.config import GRPOStageConfig
    from rl.context import RunContext
    from rl.grpo import run_grpo
    from rl.training import refinement_token_ids
    from tokens import GridCodec
    from tokens.decoders import RegionDecoder

    rows = rows_with_boxes()
    proc = AutoProcessor.from_pretrained(grid8_model)
    model = AutoModelForImageTextToText.from_pretrained(grid8_model)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    ids = refinement_token_ids(proc.tokenizer, V8)
    assert len(ids) == 10  # 9 offsets (radius 1) and <DELETE>
    stage = GRPOStageConfig(max_steps=2, batch_size=8, num_generations=4, learning_rate=1e-2,
                            max_completion_length=24, beta=0.0, trainable="refinement_tokens",
                            rewards={"refine_format": 1.0, "point_refine": 1.0})
    ctx = RunContext(vocab=V8, codec=GridCodec(V8), decoder_spec=RegionDecoder(),
                     processor=proc, prompts=PROMPTS, output_dir=tmp_path / "s2",
                     logging_steps=1)
    rollout = RefinementRollout(PROMPTS["stage2"], proposal_tokens=24,
                                generate=Alternating(proc.tokenizer, rows))
    ds = Dataset.from_list(rows).select_columns(["image", "prompt", "solution"])
    model, hist = run_grpo(stage, "grpo_stage2", ctx, model, ds, rollout_func=rollout)

    assert any(e.get("rewards/point_refine/std", 0) > 0 for e in hist)  # a signal to learn
    assert all(q.requires_grad for q in model.parameters())
    emb = model.get_input_embeddings().weight
    assert emb is model.get_output_embeddings().weight  # still tied
    trained = AutoModelForImageTextToText.from_pretrained(tmp_path / "s2")
    saved = trained.state_dict()
    assert set(saved) == set(start)
    other = torch.ones(emb.shape[0], dtype=torch.bool)
    other[ids] = False
    changed = []
    for name, before in start.items():
        after = saved[name]
        if name.endswith(("embed_tokens.weight", "lm_head.weight")):
            assert torch.equal(after[other], before[other]), name
            changed.append(not torch.equal(after[ids], before[ids]))
        else:
            assert torch.equal(after, before), name
    assert changed == [True, True]  # the embeddings and the (tied) head, the same rows

    # A proposal prompt is scored as before wherever the refinement tokens are not the answer.
    fresh = AutoModelForImageTextToText.from_pretrained(grid8_model)
    text = proc.apply_chat_template(rows[0]["prompt"], add_generation_prompt=True)
    batch = proc(text=[text], images=[rows[0]["image"]], return_tensors="pt")
    with torch.no_grad():
        a, b = fresh(**batch).logits, trained(**batch).logits
    assert torch.equal(a[..., other], b[..., other]) and not torch.equal(a, b)


def test_seeded_sampler_draws_from_the_softmax_and_honours_min_p():
    import math

    import torch

    from rl.rollout import SeededSampler

    logits = torch.tensor([math.log(0.6), math.log(0.3), math.log(0.1)])
    n = 4000
    picks = SeededSampler(range(n))(torch.zeros(n, 5, dtype=torch.long),
                                    logits.repeat(n, 1)).argmax(-1)
    share = torch.bincount(picks, minlength=3).float() / n
    assert torch.allclose(share, torch.tensor([0.6, 0.3, 0.1]), atol=0.03)
    # min_p 0.4: 0.1 < 0.4 x 0.6 is never drawn, 0.3 still is (in proportion 2:1).
    picks = SeededSampler(range(n), min_p=0.4)(torch.zeros(n, 5, dtype=torch.long),
                                               logits.repeat(n, 1)).argmax(-1)
    counts = torch.bincount(picks, minlength=3)
    assert counts[2] == 0 and abs(counts[1] / n - 1 / 3) < 0.03
    # Temperature: at 0.25 the odds 0.6 : 0.3 become 16 : 1.
    picks = SeededSampler(range(n), temperature=0.25)(torch.zeros(n, 5, dtype=torch.long),
                                                      logits.repeat(n, 1)).argmax(-1)
    assert abs((picks == 0).float().mean().item() - 0.6 ** 4 / (0.6 ** 4 + 0.3 ** 4 + 0.1 ** 4)
               ) < 0.02
    with pytest.raises(ValueError, match="temperature"):
        SeededSampler([0], temperature=0.0)


def test_a_seeded_draw_depends_on_its_seed_and_token_index_not_on_its_batch():
    import torch

    from rl.rollout import SeededSampler

    scores = torch.randn(1, 50, generator=torch.Generator().manual_seed(0))
    alone = SeededSampler([7])
    a0 = alone(torch.zeros(1, 3, dtype=torch.long), scores)
    a1 = alone(torch.zeros(1, 4, dtype=torch.long), scores)  # the next token
    # Decoded beside another prompt, padded to a longer prompt: the same two draws.
    batch = SeededSampler([11, 7])
    b0 = batch(torch.zeros(2, 9, dtype=torch.long), scores.repeat(2, 1))
    b1 = batch(torch.zeros(2, 10, dtype=torch.long), scores.repeat(2, 1))
    assert torch.equal(a0[0], b0[1]) and torch.equal(a1[0], b1[1])
    assert not torch.equal(a0[0], a1[0]) and not torch.equal(b0[0], b0[1])


class Seeds(Script):
    """The script, recording the seeded sampler each proposal call receives."""

    def __init__(self, tokenizer, rows):
        super().__init__(tokenizer, rows)
        self.samplers = []

    def __call__(self, trainer, encoded, greedy, max_new_tokens, sampler=None):
        if greedy:
            self.samplers.append(sampler)
        return super().__call__(trainer, encoded, greedy, max_new_tokens)


def test_sampled_proposals_are_one_seeded_draw_per_prompt_and_step(grid8_model):
    from transformers import AutoProcessor
    from trl.data_utils import prepare_multimodal_messages

    from rl.rollout import stream_seed

    proc = AutoProcessor.from_pretrained(grid8_model)
    rows = rows_with_boxes(2)

    class State:
        global_step = 5

    class Trainer:
        processing_class = proc
        chat_template_kwargs = {}
        eos_token_ids = [proc.tokenizer.convert_tokens_to_ids("<|im_end|>")]
        max_completion_length = 24
        state = State()

    prompts = [prepare_multimodal_messages(r["prompt"], images=[r["image"]])
               for r in rows for _ in range(3)]
    script = Seeds(proc.tokenizer, rows)
    rollout = RefinementRollout(PROMPTS["stage2"], 24, generate=script,
                                sample_proposals={"temperature": 0.7, "min_p": 0.05, "seed": 3})
    out = rollout(prompts, Trainer())
    sampler = script.samplers[0]
    assert len(sampler.seeds) == 2 and sampler.seeds[0] != sampler.seeds[1]
    assert (sampler.temperature, sampler.min_p) == (0.7, 0.05)
    assert out["stage1"][:3] == [out["stage1"][0]] * 3  # a group shares its proposal
    # The next step draws from other streams; the same step on another process (a group
    # split in two: its second prompt's entries only) from the same one.
    Trainer.state.global_step = 6
    rollout(prompts, Trainer())
    assert not set(script.samplers[1].seeds) & set(sampler.seeds)
    Trainer.state.global_step = 5
    rollout(prompts[3:], Trainer())
    assert script.samplers[2].seeds == sampler.seeds[1:]
    assert stream_seed(3, 5, "k") == stream_seed(3, 5, "k") != stream_seed(3, 6, "k")
    # Greedy proposals (the default) get no sampler.
    RefinementRollout(PROMPTS["stage2"], 24, generate=script)(prompts, Trainer())
    assert script.samplers[3] is None


def test_a_sampled_proposal_is_the_same_in_any_batch_on_the_real_model(scripted):
    from rl.rollout import SeededSampler, transformers_generate

    trainer, _, rows, _ = scripted
    proc = trainer.processing_class
    rollout = RefinementRollout(PROMPTS["stage2"], 24)
    texts = [proc.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
             for r in rows[:2]]
    enc = [rollout._encode(proc, t, [r["image"]]) for t, r in zip(texts, rows[:2], strict=True)]
    # A longer second prompt, so the first is padded in the pair.
    enc[1] = dict(enc[1], input_ids=enc[1]["input_ids"][:1] * 5 + enc[1]["input_ids"])
    if "mm_token_type_ids" in enc[1]:
        enc[1]["mm_token_type_ids"] = [0] * 5 + enc[1]["mm_token_type_ids"]
    alone = transformers_generate(trainer, enc[:1], True, 12, sampler=SeededSampler([42])).ids
    pair = transformers_generate(trainer, enc, True, 12, sampler=SeededSampler([42, 9])).ids
    assert alone[0] == pair[0]
    # Different streams draw different answers from the untrained model (near-uniform).
    draws = {tuple(transformers_generate(trainer, enc[:1], True, 12,
                                         sampler=SeededSampler([s])).ids[0]) for s in range(4)}
    greedy = tuple(transformers_generate(trainer, enc[:1], True, 12).ids[0])
    assert len(draws) > 1 and draws != {greedy}
