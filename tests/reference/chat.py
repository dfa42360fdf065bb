"""HF MiniCPM-V 2.6 chat() as a reference pipeline, written from docs/model.md §6–§7 and the published code's
behaviour: Pillow slicing, the "(<image>./</image>)" placeholders expanded by the processor, the chat
template run by transformers' tokenizer, and inputs_embeds with the resampler outputs written between
<image>/<slice> markers. Shares no code with the runtime."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .models import reference_vision_embeddings
from .slicing import reference_plan

N_QUERY = 64


def hf_slices(image: Image.Image, max_slice_nums: int = 9):
    """The overview then the slices (row-major), as Pillow images, and the grid (or None)."""
    image = image.convert("RGB")
    plan = reference_plan(image.size, max_slice_nums)
    out = [image.resize(plan["overview"], Image.BICUBIC)]
    if plan["grid"] is not None:
        refined = image.resize(plan["refine"], Image.BICUBIC)
        out += [refined.crop((x, y, x + w, y + h)) for x, y, w, h in plan["slices"]]
    return out, plan["grid"]


def image_placeholder(index: int, grid, use_image_id: bool) -> str:
    unk = "<unk>" * N_QUERY
    text = f"<image_id>{index}</image_id>" if use_image_id else ""
    text += f"<image>{unk}</image>"
    if grid is not None:
        cols, rows = grid
        text += "\n".join("".join(f"<slice>{unk}</slice>" for _ in range(cols)) for _ in range(rows))
    return text


def reference_prompt(tokenizer, msgs, system_prompt: str = "", max_slice_nums: int = 9, use_image_id: bool = True):
    """(prompt ids, Pillow slices in placeholder order) as HF chat() and its processor build them."""
    images, turns = [], []
    for msg in msgs:
        content = [msg["content"]] if isinstance(msg["content"], str) else msg["content"]
        parts = []
        for c in content:
            if isinstance(c, Image.Image):
                images.append(c)
                parts.append("(<image>./</image>)")
            else:
                parts.append(c)
        turns.append({"role": msg["role"], "content": "\n".join(parts)})
    if system_prompt:
        turns = [{"role": "system", "content": system_prompt}] + turns
    text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    chunks = text.split("(<image>./</image>)")
    final, slices = chunks[0], []
    for i, image in enumerate(images):
        pieces, grid = hf_slices(image, max_slice_nums)
        slices += pieces
        final += image_placeholder(i, grid, use_image_id) + chunks[i + 1]
    return tokenizer(final, add_special_tokens=False)["input_ids"], slices


def reference_inputs_embeds(qwen2, vpm, resampler, tokenizer, ids, slices) -> torch.Tensor:
    """Token embeddings with each slice's resampler output between its <image>/<slice> markers."""
    starts = {tokenizer.convert_tokens_to_ids(t) for t in ("<image>", "<slice>")}
    embeds = qwen2.get_input_embeddings()(torch.tensor([ids]))[0].detach().clone()
    bounds = [i + 1 for i, t in enumerate(ids) if t in starts]
    assert len(bounds) == len(slices)
    if slices:
        for begin, out in zip(bounds, reference_vision_embeddings(vpm, resampler, [np.asarray(p) for p in slices])):
            embeds[begin : begin + N_QUERY] = torch.from_numpy(out)
    return embeds[None]


def reference_greedy(qwen2, inputs_embeds, stop_ids, max_new_tokens: int) -> list[int]:
    with torch.no_grad():
        out = qwen2.generate(
            inputs_embeds=inputs_embeds,
            attention_mask=torch.ones(inputs_embeds.shape[:2], dtype=torch.long),
            eos_token_id=stop_ids,
            pad_token_id=0,
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
        )
    return out[0].tolist()
