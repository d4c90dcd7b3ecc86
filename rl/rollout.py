"""On-policy stage 2: the policy proposes, then refines its own proposal, in one GRPO trainer.

`RefinementRollout` is a TRL `rollout_func` (trl 1.16 `GRPOTrainer(rollout_func=...)`). Each step
it receives the stage-1 prompts of the batch (each repeated `num_generations` times by TRL's
sampler) and, with the current weights:

1. proposes once per distinct prompt, greedily (the default) or sampled: every member of a
   GRPO group refines the same proposal, so the group's advantages compare refinements only.
   Greedy decoding gives the same proposal on every process, also when a group is split across
   processes; a sampled proposal does too, because it is drawn from a random stream of its own,
   seeded by the prompt and the step (`SeededSampler`: greedy decoding of the logits plus
   seeded Gumbel noise, which is sampling from them);
2. extends each conversation the way evaluation does (`rl.evaluate.predict`): the proposal as
   the assistant turn, the refinement request (`prompts["stage2"]`) as the next user turn;
3. samples one refinement per prompt entry with TRL's own generation settings (temperature...).

TRL keeps the stage-1 prompt as the prompt (its image features and `mm_token_type_ids` are
computed from it); the rest of the dialogue is the completion: the proposal and the request are
marked as context with `env_mask` 0 (no loss, no credit), the refinement with 1. The rewards
receive the proposal in the `stage1` column and the refinement alone in the `refinement` column
(`rewards.stage2` reads it in place of the decoded completion, which holds the whole tail).

Generation runs through transformers (TRL's `unwrap_model_for_generation`, so ZeRO-3 gathers
its parameters as in TRL's own path); vLLM generation is not wired for this path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rl.data.samples import assistant_turn, user_turn


@dataclass
class Generated:
    """What a generator returns per input: the new token ids (ending at the first end-of-turn
    token when the model wrote one)."""

    ids: list[list[int]]


def _images_of(prompt: list) -> list:
    return [part["image"] for message in prompt if isinstance(message.get("content"), list)
            for part in message["content"] if part.get("type") == "image"]


def _prompt_key(text: str, images: Sequence) -> str:
    h = hashlib.sha1(text.encode())
    for img in images:
        h.update(img.tobytes() if hasattr(img, "tobytes") else repr(img).encode())
    return h.hexdigest()


def cut_at_eos(ids: Sequence[int], eos_ids: Sequence[int], pad_id: int | None) -> list[int]:
    """Generated ids up to and including the first end-of-sequence token; padding dropped."""
    out = []
    for t in ids:
        t = int(t)
        if t in eos_ids:
            out.append(t)
            break
        if pad_id is not None and t == pad_id and t not in eos_ids:
            break
        out.append(t)
    return out


class SeededSampler:
    """A transformers logits processor that turns greedy decoding into sampling at
    `temperature` (tokens below `min_p` times the most likely one's probability left out, 0:
    off), each row from its own random stream: row r's noise at its k-th new token depends on
    (seeds[r], k) alone, so a prompt draws the same answer whatever batch it is decoded in and
    however far it is padded. Gumbel-max: argmax(logits / T + Gumbel noise) is a draw from
    softmax(logits / T)."""

    def __init__(self, seeds: Sequence[int], temperature: float = 1.0, min_p: float = 0.0):
        if temperature <= 0:
            raise ValueError(f"SeededSampler: temperature must be > 0, got {temperature!r}")
        self.seeds = [int(s) for s in seeds]
        self.temperature = float(temperature)
        self.min_p = float(min_p or 0.0)
        self.start: int | None = None

    def __call__(self, input_ids, scores):
        import torch

        if self.start is None:  # the first call sees the prompt alone
            self.start = input_ids.shape[1]
        k = input_ids.shape[1] - self.start
        scores = scores.float() / self.temperature
        if self.min_p > 0:
            probs = torch.softmax(scores, dim=-1)
            floor = self.min_p * probs.amax(dim=-1, keepdim=True)
            scores = scores.masked_fill(probs < floor, float("-inf"))
        noise = torch.empty_like(scores, device="cpu")
        for row, seed in enumerate(self.seeds):
            gen = torch.Generator().manual_seed((seed * 1_000_003 + k) % (2 ** 63))
            u = torch.rand(scores.shape[-1], generator=gen).clamp_(1e-20, 1.0 - 1e-7)
            noise[row] = -torch.log(-torch.log(u))
        return scores + noise.to(scores.device)


def stream_seed(*parts) -> int:
    """A 60-bit seed from any strings and numbers (the same on every process)."""
    h = hashlib.sha1("\x1f".join(str(p) for p in parts).encode()).hexdigest()
    return int(h[:15], 16)


def transformers_generate(trainer, encoded: list[dict], greedy: bool,
                          max_new_tokens: int, sampler: SeededSampler | None = None
                          ) -> Generated:
    """Generate for `encoded` inputs (each: input_ids, mm_token_type_ids, pixel_values,
    image_grid_thw of one prompt) with the trainer's model, left-padded into one batch.
    `sampler` (with `greedy`): greedy decoding through that logits processor (a seeded draw)."""
    import copy

    import torch
    from trl.models import unwrap_model_for_generation

    tok = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
    pad_id = tok.pad_token_id
    width = max(len(e["input_ids"]) for e in encoded)

    def left(values, fill):
        return torch.tensor([[fill] * (width - len(v)) + list(v) for v in values])

    inputs = {"input_ids": left([e["input_ids"] for e in encoded], pad_id),
              "attention_mask": left([[1] * len(e["input_ids"]) for e in encoded], 0)}
    if "mm_token_type_ids" in encoded[0]:
        inputs["mm_token_type_ids"] = left([e["mm_token_type_ids"] for e in encoded], 0)
    for key in ("pixel_values", "image_grid_thw"):
        if key in encoded[0]:
            inputs[key] = torch.cat([e[key] for e in encoded])
    device = trainer.accelerator.device
    inputs = {k: v.to(device) for k, v in inputs.items()}
    config = copy.deepcopy(trainer.generation_config)
    config.max_new_tokens = max_new_tokens
    if greedy:
        config.do_sample = False
        for name in ("temperature", "top_p", "top_k", "min_p"):
            setattr(config, name, None)
    with (unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                      gather_deepspeed3_params=trainer.args.ds3_gather_for_generation)
          as model, torch.no_grad()):
        was_training = model.training
        model.eval()
        try:
            extra = {}
            if sampler is not None:
                from transformers import LogitsProcessorList

                extra["logits_processor"] = LogitsProcessorList([sampler])
            out = model.generate(**inputs, generation_config=config, **extra)
        finally:
            model.train(was_training)
    new = out[:, width:].cpu().tolist()
    return Generated([cut_at_eos(ids, trainer.eos_token_ids, pad_id) for ids in new])


class RefinementRollout:
    """TRL `rollout_func` for on-policy stage 2 (see the module docstring).

    request: the refinement request (`prompts["stage2"]`). proposal_tokens: the proposal's
    length limit. refinement_tokens: the refinement's (None: the trainer's
    `max_completion_length`). generate: (trainer, encoded, greedy, max_new_tokens) ->
    Generated; transformers by default, any other callable (a scripted policy in tests).
    anchor_proposal: the proposal turn's tokens carry the loss too (`env_mask` 1). Every member
    of a group shares them, so their policy-gradient terms nearly cancel (the advantages of a
    group sum to 0) while the KL term holds them to the reference: training the refinement
    then moves the proposals less.
    sample_proposals: None (greedy proposals) or {"temperature", "min_p", "seed"}: each
    distinct prompt's proposal is drawn by a `SeededSampler` whose stream is seeded by
    (seed, the trainer's global step, the prompt); the generator is then called with
    `sampler=` that processor.
    The last rollout is kept in `last` (proposals, refinements) for inspection."""

    def __init__(self, request: str, proposal_tokens: int, refinement_tokens: int | None = None,
                 generate: Callable = transformers_generate, anchor_proposal: bool = False,
                 sample_proposals: dict | None = None):
        self.request = request
        self.proposal_tokens = int(proposal_tokens)
        self.refinement_tokens = refinement_tokens
        self.generate = generate
        self.anchor_proposal = bool(anchor_proposal)
        self.sample_proposals = dict(sample_proposals) if sample_proposals else None
        self.last: dict = {}

    def _propose(self, trainer, encoded: list[dict], keys: list[str]) -> list[list[int]]:
        """One proposal per distinct prompt: greedy, or a seeded draw (see the class)."""
        if self.sample_proposals is None:
            return self.generate(trainer, encoded, True, self.proposal_tokens).ids
        s = self.sample_proposals
        step = getattr(getattr(trainer, "state", None), "global_step", 0)
        sampler = SeededSampler([stream_seed(s.get("seed", 0), step, key) for key in keys],
                                s.get("temperature", 1.0), s.get("min_p", 0.0))
        return self.generate(trainer, encoded, True, self.proposal_tokens, sampler=sampler).ids

    def _encode(self, processor, text: str, images: list) -> dict:
        enc = processor(text=[text], images=images or None, return_tensors="pt")
        out = {"input_ids": enc["input_ids"][0].tolist()}
        if "mm_token_type_ids" in enc:
            out["mm_token_type_ids"] = enc["mm_token_type_ids"][0].tolist()
        for key in ("pixel_values", "image_grid_thw"):
            if key in enc:
                out[key] = enc[key]
        return out

    def __call__(self, prompts: list, trainer) -> dict:
        from trl.data_utils import apply_chat_template

        if getattr(trainer, "use_vllm", False):
            raise ValueError("grpo_stage2.on_policy generates with transformers; vLLM is not "
                             "wired for this path: set use_vllm: false, or on_policy: false "
                             "(the rounds design, which TRL generates with vLLM)")
        processor = trainer.processing_class
        tok = getattr(processor, "tokenizer", processor)
        kwargs = getattr(trainer, "chat_template_kwargs", {}) or {}

        def render(conversation):
            return apply_chat_template({"prompt": conversation}, processor, **kwargs)["prompt"]

        # 1. One proposal per distinct prompt (greedy, or a seeded draw).
        texts = [render(p) for p in prompts]
        images = [_images_of(p) for p in prompts]
        keys = [_prompt_key(t, i) for t, i in zip(texts, images, strict=True)]
        first = {}
        for k, key in enumerate(keys):
            first.setdefault(key, k)
        distinct = list(first.values())
        encoded = {k: self._encode(processor, texts[k], images[k]) for k in distinct}
        proposed = self._propose(trainer, [encoded[k] for k in distinct],
                                 [keys[k] for k in distinct])
        proposal = {keys[k]: tok.decode(ids, skip_special_tokens=True)
                    for k, ids in zip(distinct, proposed, strict=True)}

        # 2. The dialogue after the stage-1 prompt: proposal turn and refinement request.
        tails, answered = {}, {}
        for k in distinct:
            turn = list(prompts[k]) + [assistant_turn(proposal[keys[k]])]
            with_turn = processor.apply_chat_template(turn, tokenize=False, **kwargs)
            full = render(turn + [user_turn(self.request)])
            if not (with_turn.startswith(texts[k]) and full.startswith(with_turn)):
                raise ValueError("the chat template does not render the stage-2 dialogue as "
                                 "the stage-1 prompt followed by more text; on-policy stage 2 "
                                 "needs a prefix-preserving template")
            own = tok(with_turn[len(texts[k]):], add_special_tokens=False)["input_ids"]
            rest = tok(full[len(with_turn):], add_special_tokens=False)["input_ids"]
            tails[keys[k]], answered[keys[k]] = own + rest, len(own)

        # 3. One sampled refinement per prompt entry (TRL repeated each prompt per group).
        inputs = []
        for key in keys:
            enc = dict(encoded[first[key]])
            tail = tails[key]
            enc["input_ids"] = enc["input_ids"] + tail
            if "mm_token_type_ids" in enc:
                enc["mm_token_type_ids"] = enc["mm_token_type_ids"] + [0] * len(tail)
            inputs.append(enc)
        limit = self.refinement_tokens or trainer.max_completion_length
        refined = self.generate(trainer, inputs, False, limit).ids

        stage1 = [proposal[key] for key in keys]
        refinement = [tok.decode(ids, skip_special_tokens=True) for ids in refined]
        self.last = {"stage1": stage1, "refinement": refinement}
        return {
            "prompt_ids": [encoded[first[key]]["input_ids"] for key in keys],
            "completion_ids": [tails[key] + ids for key, ids in zip(keys, refined, strict=True)],
            "env_mask": [[int(self.anchor_proposal)] * answered[key]
                         + [0] * (len(tails[key]) - answered[key]) + [1] * len(ids)
                         for key, ids in zip(keys, refined, strict=True)],
            "logprobs": None,
            "stage1": stage1,
            "refinement": refinement,
        }
