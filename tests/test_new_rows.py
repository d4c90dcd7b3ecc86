"""LoRA cold start: how the new token rows train (`sft.new_rows`). On an untied model only the
spatial tokens' rows of the input embeddings and the head change (PEFT's TrainableTokens for
the embeddings, a parametrization for the head that TRL's fused LM head reads); a tied model
keeps `modules_to_save`."""

import pytest
import torch
from datasets import Dataset
from transformers import AutoProcessor

from rl.config import ConfigError, SFTStageConfig, load_config
from rl.context import RunContext
from rl.data.referring import synthetic_records
from rl.data.samples import BuildConfig, build_sft, load_prompts
from rl.models import load_model
from rl.train_sft import run_sft, sft_trainer
from rl.training import lora_config, new_rows_mode
from tokens import GridCodec, SpatialVocab
from tokens.decoders import RegionDecoder

LORA = {"r": 4, "alpha": 8, "dropout": 0.0}


@pytest.fixture(scope="module")
def untied_grid8(tiny_model_dirs, tmp_path_factory):
    from tokens.extend import main as extend

    out = tmp_path_factory.mktemp("untied_grid8")
    extend(["--model", str(tiny_model_dirs["untied"]), "--out", str(out), "--grid-size", "8"])
    return out


def _ctx_and_data(model_dir, out):
    processor = AutoProcessor.from_pretrained(model_dir)
    vocab = SpatialVocab(8)
    ctx = RunContext(vocab=vocab, codec=GridCodec(vocab), decoder_spec=RegionDecoder(),
                     processor=processor, prompts=load_prompts(), output_dir=out)
    rows = list(build_sft(synthetic_records(8, seed=4), RegionDecoder(), ctx.prompts,
                          BuildConfig(vocab=vocab, refinement=False)))
    ds = Dataset.from_list(rows).select_columns(["image", "prompt", "completion"])
    ids = sorted(vocab.token_ids(processor.tokenizer).values())
    return ctx, ds, ids


def test_auto_resolves_by_tying(grid8_model, untied_grid8):
    assert new_rows_mode("auto", load_model(grid8_model)) == "modules_to_save"
    assert new_rows_mode("auto", load_model(untied_grid8)) == "trainable_tokens"
    with pytest.raises(ValueError, match="untied"):
        new_rows_mode("trainable_tokens", load_model(grid8_model))
    with pytest.raises(ValueError, match="new_rows"):
        new_rows_mode("rows", load_model(grid8_model))
    with pytest.raises(ConfigError, match="sft.new_rows"):
        load_config(None, {"sft": {"new_rows": "all"}})


def test_lora_config_per_mode():
    assert lora_config(LORA).modules_to_save is None
    assert lora_config(LORA).trainable_token_indices is None
    assert set(lora_config(LORA, "modules_to_save").modules_to_save) == {"embed_tokens",
                                                                         "lm_head"}
    assert lora_config(LORA, "trainable_tokens", [7, 3]).trainable_token_indices == {
        "embed_tokens": [3, 7]}


def test_trainable_tokens_train_only_the_new_rows(untied_grid8, tmp_path):
    ctx, ds, ids = _ctx_and_data(untied_grid8, tmp_path / "sft")
    model = load_model(untied_grid8)
    emb0 = model.get_input_embeddings().weight.detach().clone()
    head0 = model.get_output_embeddings().weight.detach().clone()
    stage = SFTStageConfig(max_steps=3, batch_size=4, learning_rate=1e-2, lora=LORA)

    trainer = sft_trainer(stage, ctx, load_model(untied_grid8), ds)
    trainable = {n: p.numel() for n, p in trainer.model.named_parameters() if p.requires_grad}
    # The adapter, the embeddings' new rows and the head's new rows; no full matrix.
    rows = [n for n in trainable if "trainable_tokens" in n or "parametrizations" in n]
    assert len(rows) == 2 and all(trainable[n] == len(ids) * emb0.shape[1] for n in rows)
    assert max(trainable.values()) < emb0.numel()

    merged, _ = run_sft(stage, ctx, model, ds)
    new = torch.zeros(emb0.shape[0], dtype=torch.bool)
    new[ids] = True
    emb1 = merged.get_input_embeddings().weight.detach()
    head1 = merged.get_output_embeddings().weight.detach()
    assert torch.equal(emb1[~new], emb0[~new]) and torch.equal(head1[~new], head0[~new])
    # Every new row of the head has a gradient (the softmax); an embedding row only when its
    # token was read, here the grid cells of the answers.
    assert (head1[new] != head0[new]).any(dim=1).all()
    assert (emb1[new] != emb0[new]).any(dim=1).sum() >= 4
    saved = load_model(tmp_path / "sft")                         # parametrization folded
    assert not any("parametrizations" in k for k in saved.state_dict())
    assert torch.equal(saved.get_output_embeddings().weight, merged.get_output_embeddings().weight)
    assert torch.equal(saved.get_input_embeddings().weight, merged.get_input_embeddings().weight)


def test_tied_model_keeps_modules_to_save(grid8_model, tmp_path):
    ctx, ds, _ = _ctx_and_data(grid8_model, tmp_path / "sft")
    stage = SFTStageConfig(max_steps=1, batch_size=4, lora=LORA)
    trainer = sft_trainer(stage, ctx, load_model(grid8_model), ds)
    names = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert any("modules_to_save" in n for n in names)
    assert not any("trainable_tokens" in n or "parametrizations" in n for n in names)


def test_refinement_rows_only_on_an_untied_head(untied_grid8, monkeypatch):
    """`trainable: refinement_tokens` on an untied model: the input embeddings and the head
    each train their own rows of the offset tokens and <DELETE>, nothing else moves; ZeRO-3 is
    refused."""
    import torch
    from transformers import AutoModelForImageTextToText

    from rl.training import refinement_rows_only, refinement_token_ids

    model = AutoModelForImageTextToText.from_pretrained(untied_grid8)
    tok = AutoProcessor.from_pretrained(untied_grid8).tokenizer
    ids = refinement_token_ids(tok, SpatialVocab(8))
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    assert embed.weight is not head.weight
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with refinement_rows_only(model, ids):
        trainable = [q for q in model.parameters() if q.requires_grad]
        assert len(trainable) == 2 and all(q.shape == (len(ids), embed.weight.shape[1])
                                           for q in trainable)
        opt = torch.optim.SGD(trainable, lr=1.0)
        x = torch.tensor([[ids[0], 5, ids[-1], 7]])  # two refinement tokens among others
        hidden = model.model.language_model(input_ids=x).last_hidden_state
        (hidden.sum() + head(hidden)[..., ids].sum()).backward()
        opt.step()
    assert all(q.requires_grad for q in model.parameters())
    other = torch.ones(embed.weight.shape[0], dtype=torch.bool)
    other[ids] = False
    for name, after in model.state_dict().items():
        before = start[name]
        if name.endswith(("embed_tokens.weight", "lm_head.weight")):
            assert torch.equal(after[other], before[other]), name
            assert not torch.equal(after[ids], before[ids]), name
        else:
            assert torch.equal(after, before), name
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(ValueError, match="ZeRO-3"):
        with refinement_rows_only(model, ids):
            pass
