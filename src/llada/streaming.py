"""Streamers for diffusion generation: watch the canvas fill in.

`model.generate(..., streamer=s)` calls `s.put(prompt_ids)`, then `s.put(block_ids)` for each finished block, then
`s.end()` (transformers' `BaseStreamer` protocol, so `TextStreamer` works). A streamer that also defines
`on_step(canvas, step, prompt_length)` receives the whole canvas `(batch, total_length)` after every denoising step;
`LLaDATerminalStreamer` redraws it in place, masks shown as `mask_symbol` (the CLI's `--show-steps`).
"""

import shutil
import sys

import torch
from transformers.generation.streamers import BaseStreamer


class LLaDADiffusionStreamer(BaseStreamer):
    """Base class of streamers that see intermediate canvases. Subclasses implement `on_step`; `put` and `end`
    receive the prompt, the finished blocks and the end of generation (no-ops here)."""

    def put(self, value: torch.Tensor):
        pass

    def end(self):
        pass

    def on_step(self, canvas: torch.Tensor, step: int, prompt_length: int):
        raise NotImplementedError


class LLaDATerminalStreamer(LLaDADiffusionStreamer):
    """Draws the generated part of the first row after every step, masks as `mask_symbol`, rewriting the same
    lines of a terminal. On a stream that is not a terminal, each canvas is written on its own line.

    Args:
        tokenizer: decodes the canvas.
        mask_token_id (`int`, *optional*): id of the mask token; defaults to the tokenizer's `<|mdm_mask|>` (or its
            `mask_token_id`).
        stream (*optional*, defaults to `sys.stdout`): where to write.
        mask_symbol (`str`, *optional*, defaults to `"░"`): how a masked position is drawn.
        show_prompt (`bool`, *optional*, defaults to `False`): draw the prompt too (useful for infilling).

    Example:

    ```python
    >>> streamer = LLaDATerminalStreamer(tokenizer)
    >>> model.generate(input_ids, max_new_tokens=64, streamer=streamer)
    ```
    """

    def __init__(
        self,
        tokenizer,
        mask_token_id: int | None = None,
        stream=None,
        mask_symbol: str = "░",
        show_prompt: bool = False,
    ):
        if mask_token_id is None:
            mask_token_id = tokenizer.convert_tokens_to_ids("<|mdm_mask|>")
            if mask_token_id is None or mask_token_id == tokenizer.unk_token_id:
                mask_token_id = tokenizer.mask_token_id
            if mask_token_id is None:
                raise ValueError(
                    "LLaDATerminalStreamer: the tokenizer has no <|mdm_mask|> or mask token; pass "
                    "mask_token_id=model.config.mask_token_id."
                )
        self.tokenizer = tokenizer
        self.mask_token_id = mask_token_id
        self.stream = stream if stream is not None else sys.stdout
        self.mask_symbol = mask_symbol
        self.show_prompt = show_prompt
        self.steps = 0
        self._lines_drawn = 0
        self.last_text = ""

    def render(self, ids: list[int]) -> str:
        """Text of `ids` with every mask token drawn as `mask_symbol` (runs of real tokens are decoded together)."""
        parts, run = [], []
        for token in ids:
            if token == self.mask_token_id:
                if run:
                    parts.append(self.tokenizer.decode(run))
                    run = []
                parts.append(self.mask_symbol)
            else:
                run.append(token)
        if run:
            parts.append(self.tokenizer.decode(run))
        return "".join(parts)

    def on_step(self, canvas: torch.Tensor, step: int, prompt_length: int):
        row = canvas[0] if self.show_prompt else canvas[0, prompt_length:]
        text = self.render(row.tolist())
        self.steps = step + 1
        self.last_text = text
        if not self._is_terminal():
            self.stream.write(f"[step {step + 1}] {text}\n")
            self.stream.flush()
            return
        if self._lines_drawn:
            self.stream.write(f"\r\x1b[{self._lines_drawn - 1}A\x1b[J" if self._lines_drawn > 1 else "\r\x1b[J")
        self.stream.write(text)
        self.stream.flush()
        self._lines_drawn = self._count_lines(text)

    def end(self):
        if self._lines_drawn:  # leave the last drawing in place and move below it
            self.stream.write("\n")
            self.stream.flush()
        self._lines_drawn = 0

    def _is_terminal(self) -> bool:
        return hasattr(self.stream, "isatty") and self.stream.isatty()

    @staticmethod
    def _count_lines(text: str) -> int:
        width = max(shutil.get_terminal_size().columns, 1)
        return sum(max(1, -(-len(line) // width)) for line in text.split("\n"))


__all__ = ["LLaDADiffusionStreamer", "LLaDATerminalStreamer"]
