"""End-to-end demo of the spatial vocabulary, offline, on a CPU, in about ten seconds.

    python -m rl.demo [--out runs/demo]

1. builds a tiny Qwen2.5-VL with random weights and adds the 1034 spatial tokens to it;
2. draws a synthetic scene and turns each object's mask into grid tokens (greedy conversion over
   weight-free proposals), writing the stage-1 answer a model should give;
3. builds an offset-refinement target for one object and applies it;
4. lets the (untrained) model answer and shows that the parser scores its output without raising;
5. saves a picture of the scene with the boxes and grid points of the answer.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from tokens import apply_refinement, parse_answer, parse_refinement, serialize_answer
from tokens.answer import Instance
from tokens.decoders import SuperpixelProposer
from tokens.greedy import mask_to_tokens
from tokens.offsets import refinement_example
from tokens.vocab import SpatialVocab


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m rl.demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from rl.data.scenes import draw_scene
    from rl.models import build_tiny_qwen2_5_vl
    from tokens.extend import extend_checkpoint

    out = Path(args.out)
    vocab = SpatialVocab()
    print("1. tiny Qwen2.5-VL, built offline, extended with the spatial vocabulary")
    base = build_tiny_qwen2_5_vl(out / "base", seed=args.seed)
    report = extend_checkpoint(base, out / "model", vocab)
    print(f"   added {report['added']} tokens, ids {report['ids'][0]}..{report['ids'][1]}, "
          f"embedding rows {report['rows_before']} -> {report['embedding_rows']}")

    print("2. masks -> grid tokens (greedy conversion over superpixel proposals)")
    rng = np.random.default_rng(args.seed)
    image, objects = draw_scene(rng, (224, 224), n_objects=3)
    results = mask_to_tokens(image, [o.mask_hw for o in objects], SuperpixelProposer(), vocab)
    instances = []
    for obj, res in zip(objects, results, strict=True):
        x1, y1, x2, y2 = obj.box_xyxy_px
        instances.append(Instance((x1 / 224, y1 / 224, x2 / 224, y2 / 224), res.points(vocab)))
        print(f"   {obj.colour} {obj.shape}: {len(res.cells)} tokens reproduce IoU {res.iou:.2f}")
    answer = serialize_answer(instances, think="All the shapes.")
    print("   stage-1 answer:\n" + "\n".join("     " + line for line in answer.splitlines()))
    parsed = parse_answer(answer)
    print(f"   parsed back: {len(parsed.instances)} instances, errors: {parsed.errors}")

    print("3. offset refinement target for the first object")
    obj = objects[0]
    x1, y1, x2, y2 = obj.box_xyxy_px
    ex = refinement_example(obj.mask_hw, (x1 / 224, y1 / 224, x2 / 224, y2 / 224), vocab, rng)
    stage1 = serialize_answer([ex.stage1])
    stage2 = f"<answer>\n{ex.offset_line(vocab)}\n</answer>"
    print(f"   categories: {ex.categories}")
    print(f"   stage-2 answer: {ex.offset_line(vocab)}")
    refined = apply_refinement(stage1, parse_refinement(stage2, stage1))
    kept = len(refined[0].points) if refined else 0
    print(f"   applied: {kept} of {len(ex.stage1.points)} points kept")

    print("4. the untrained model answers; the parser scores it and never raises")
    model = AutoModelForImageTextToText.from_pretrained(out / "model", use_kernels=False)
    proc = AutoProcessor.from_pretrained(out / "model")
    msgs = [{"role": "user", "content": [{"type": "image"},
                                         {"type": "text", "text": "Segment all shapes."}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    inputs = proc(text=[text], images=[Image.fromarray(image).resize((112, 112))],
                  return_tensors="pt")
    torch.manual_seed(args.seed)
    with torch.no_grad():
        gen = model.generate(**inputs, max_new_tokens=24, do_sample=True)
    completion = proc.batch_decode(gen[:, inputs["input_ids"].shape[1]:],
                                   skip_special_tokens=True)[0]
    garbage = parse_answer(completion)
    print(f"   completion: {completion[:120]!r}")
    print(f"   well-formed: {garbage.well_formed}, instances: {len(garbage.instances)}, "
          f"first error: {(garbage.errors or ['none'])[0]}")

    from rl.visualize import draw_prediction

    picture = draw_prediction(image, parsed.instances, vocab, out / "scene.png")
    print(f"5. picture of the stage-1 answer: {picture}")
    return {"report": report, "instances": parsed.instances, "picture": picture}


if __name__ == "__main__":
    main()
