"""A demo page for a trained checkpoint: pick or upload a scene, type an expression, ground it.

    pip install -e ".[app]"
    python -m rl.app --model runs/default/grpo_stage2            # http://127.0.0.1:7860
    python -m rl.app --model CKPT --decoder '{"name": "sam", "variant": "vit_h",
                                              "checkpoint": "sam_vit_h.pth"}'

The page shows the grid-token proposal and the refined result side by side (each round's moves
as arrows, its deletions crossed out), the final mask, the answer tokens of every round, what
each round did, and the time taken. It runs on the CPU with the weight-free decoder (the
default run's setting), or with SAM when a checkpoint is given. The bundled scenes are drawn by
the package's scene generator (`rl.data.referring`) with the checkpoint's run settings, each
with an expression to start from.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The bundled scenes: their own seed, neither the training nor the held-out scenes of a run.
SCENE_SEED = 424242
N_SCENES = 6
MAX_ROUNDS = 3


@dataclass
class Answer:
    """What the page shows for one query."""

    picture: np.ndarray  # proposal | refined, captioned (RGB)
    mask: np.ndarray  # the image, dimmed outside the final mask (RGB)
    tokens: str  # the answer tokens, one line per round
    rounds: str  # what each refinement round did
    timing: str


def bundled_scenes(model_dir: str | Path, n: int = N_SCENES) -> list[tuple[str, np.ndarray]]:
    """`n` synthetic scenes drawn with the checkpoint's run settings (image size, shapes per
    scene, distractors; defaults for a checkpoint without a run), each with its expression."""
    from rl.data.referring import synthetic_records

    run_file = Path(model_dir).parent / "config.json"
    data = json.loads(run_file.read_text()).get("data", {}) if run_file.is_file() else {}
    records = synthetic_records(n, SCENE_SEED, data.get("image_size", 112),
                                tuple(data.get("objects", (2, 4))),
                                distractors=data.get("distractors", "any"))
    return [(r.expression, np.asarray(r.image)[..., :3]) for r in records]


def describe_rounds(result) -> str:
    """One line per refinement round: points moved and deleted, with where they went."""
    lines = []
    for k, (moves, deleted) in enumerate(zip(result.moves, result.deleted, strict=True), 1):
        w, h = result.size
        moved = ", ".join(f"({x0 * w:.0f}, {y0 * h:.0f}) -> ({x1 * w:.0f}, {y1 * h:.0f})"
                          for (x0, y0), (x1, y1) in moves)
        gone = ", ".join(f"({x * w:.0f}, {y * h:.0f})" for x, y in deleted)
        lines.append(f"round {k}: moved {len(moves)} point(s){': ' + moved if moved else ''}; "
                     f"deleted {len(deleted)}{': ' + gone if gone else ''}")
    return "\n".join(lines) or "no refinement round"


def mask_picture(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with everything outside `mask` dimmed to a quarter."""
    out = image.astype(np.float32)
    out[~mask] *= 0.25
    return out.astype(np.uint8)


def answer(grounder, image, query: str, rounds: int) -> Answer:
    """Ground `query` in `image` (an array) with `rounds` refinement rounds."""
    t0 = time.perf_counter()
    result = grounder(image, query, rounds=int(rounds))
    seconds = time.perf_counter() - t0
    tokens = "\n".join(f"{'proposal' if k == 0 else f'round {k}'}: {' '.join(t) or '(none)'}"
                       for k, t in enumerate(result.tokens))
    n = len(result.instances)
    timing = (f"{seconds:.2f} s for the proposal and {len(result.answers) - 1} refinement "
              f"round(s); {n} instance(s), {int(result.mask.sum())} mask pixels")
    return Answer(np.asarray(grounder.picture(result)), mask_picture(result.image, result.mask),
                  tokens, describe_rounds(result), timing)


def build_app(grounder, scenes: list[tuple[str, np.ndarray]]):
    """The Gradio page around `grounder` (an `rl.infer.Grounder`)."""
    import gradio as gr

    names = [f"{k + 1}: {text}" for k, (text, _) in enumerate(scenes)]

    def pick(name):
        if name is None:
            return gr.update(), gr.update()
        text, image = scenes[names.index(name)]
        return image, text

    def run(image, query, rounds):
        if image is None:
            raise gr.Error("Pick a bundled scene or upload an image first.")
        if not (query or "").strip():
            raise gr.Error("Type an expression, e.g. 'the red circle'.")
        a = answer(grounder, image, query.strip(), rounds)
        return a.picture, a.mask, a.tokens, a.rounds, a.timing

    with gr.Blocks(title="getok: grounding in spatial tokens") as page:
        gr.Markdown(f"## getok: ground an expression\nCheckpoint `{grounder.model_dir}`, "
                    f"{grounder.vocab.grid_size}x{grounder.vocab.grid_size} grid tokens.")
        with gr.Row():
            with gr.Column():
                scene = gr.Radio(names, label="a bundled scene", elem_id="scene")
                image = gr.Image(type="numpy", label="or your own image", elem_id="image",
                                 format="png")  # lossless: the scene reaches the model as drawn
                query = gr.Textbox(label="expression", elem_id="query",
                                   placeholder="the red circle")
                rounds = gr.Slider(0, MAX_ROUNDS, value=1, step=1, elem_id="rounds",
                                   label="refinement rounds")
                go = gr.Button("Ground", variant="primary", elem_id="run")
            with gr.Column():
                picture = gr.Image(label="proposal | refined", elem_id="picture",
                                   format="png", interactive=False)
                mask = gr.Image(label="final mask", elem_id="mask", format="png",
                                interactive=False)
                tokens = gr.Textbox(label="answer tokens", elem_id="tokens", lines=4)
                what = gr.Textbox(label="what each round did", elem_id="rounds_done", lines=3)
                timing = gr.Textbox(label="time", elem_id="timing")
        scene.change(pick, scene, [image, query])
        go.click(run, [image, query, rounds], [picture, mask, tokens, what, timing])
    return page


def page_theme():
    """Gradio's default theme with system fonts: the page loads nothing from outside the
    machine that serves it."""
    import gradio as gr

    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def main(argv=None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    p = argparse.ArgumentParser(prog="python -m rl.app", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a saved checkpoint (with spatial_vocab.json)")
    p.add_argument("--decoder", default="region",
                   help='"region", or JSON like {"name": "sam", "variant": "vit_h", '
                        '"checkpoint": "sam_vit_h.pth"}')
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-new-tokens", type=int, default=64)
    a = p.parse_args(argv)
    if not (Path(a.model) / "spatial_vocab.json").is_file():
        raise SystemExit(f"{a.model}: not a checkpoint with a spatial vocabulary "
                         "(spatial_vocab.json); e.g. runs/default/grpo_stage2")
    try:
        import gradio  # noqa: F401
    except ImportError as e:
        raise SystemExit('the demo page needs Gradio: pip install -e ".[app]"') from e
    from rl.context import read_spec
    from rl.infer import Grounder

    grounder = Grounder(a.model, read_spec(a.decoder), max_new_tokens=a.max_new_tokens)
    page = build_app(grounder, bundled_scenes(a.model))
    print(f"getok demo page: http://{a.host}:{a.port}", flush=True)
    page.launch(server_name=a.host, server_port=a.port, theme=page_theme(), show_error=True)


if __name__ == "__main__":
    main()
