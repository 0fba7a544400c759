"""lm-evaluation-harness model `llada`: log-likelihoods from the Monte Carlo bound, generation from the sampler.

Needs the `eval` extra (`pip install "llada[eval]"`). Importing this module registers the model with lm-eval's
registry. lm-eval releases with entry-point discovery (the `lm_eval.models` group, declared in llada's
pyproject.toml) find it by name alone; with older ones (0.4.x up to 0.4.13) use the wrapper, which imports this
module and then runs lm-eval's own command line:

    llada eval lm-eval --model llada --model_args pretrained=GSAI-ML/LLaDA-8B-Base,mc_num=128 --tasks arc_easy
    python -m llada.evaluation.lm_eval_model --model llada --model_args pretrained=PATH --tasks ...

or, from Python, `import llada.evaluation.lm_eval_model` before `lm_eval.simple_evaluate(model="llada", ...)`.

Model arguments (`--model_args k=v,...`): `pretrained` (folder or Hub id), `tokenizer` (default: `pretrained`),
`dtype` (`auto`, `bfloat16`, `float16`, `float32`), `device`, `mc_num` (128), `mc_batch_size` (the published
estimator's stratification group: 16, or the largest divisor of `mc_num` below 16), `estimator` (`published` or
`stratified`), `cfg_scale` (0), `max_batch_tokens` (8192), `seed` (1234), `check_greedy` (False), `context_length`
(0; for `loglikelihood_rolling`), `max_length` (default: the model's), and the sampler's defaults for
`generate_until`: `max_new_tokens` (256), `steps` (default: `max_new_tokens`), `block_length` (default:
`max_new_tokens`), `temperature` (0), `remasking` (`low_confidence`), `gen_cfg_scale` (0). A task's
`generation_kwargs` override them per request (`max_gen_toks`, `until`, `temperature`, `steps`, `block_length`,
`remasking`, `cfg_scale`).

`is_greedy` (used by a few tasks' `acc` of exact continuations) is computed only with `check_greedy=True`: the
answer is greedy when the published low-confidence sampler, unmasking one token per step, reproduces it exactly
(one forward pass per answer token). Otherwise it is reported as False.
"""

from __future__ import annotations

import logging
import sys

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm.auto import tqdm

from ..likelihood_llada import published_group_size
from .perplexity import chunk_pairs

logger = logging.getLogger(__name__)
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _as_bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


@register_model("llada")
class LLaDAEvalHarness(LM):
    """lm-eval `LM` for LLaDA models (see the module docstring for the arguments)."""

    def __init__(
        self,
        pretrained,
        tokenizer=None,
        dtype: str = "auto",
        device: str | None = None,
        mc_num: int = 128,
        mc_batch_size: int | None = None,
        estimator: str = "published",
        cfg_scale: float = 0.0,
        max_batch_tokens: int = 8192,
        seed: int = 1234,
        check_greedy: bool = False,
        context_length: int = 0,
        max_length: int | None = None,
        max_new_tokens: int = 256,
        steps: int | None = None,
        block_length: int | None = None,
        temperature: float = 0.0,
        remasking: str = "low_confidence",
        gen_cfg_scale: float = 0.0,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        trust_remote_code: bool = False,
    ):
        super().__init__()
        from transformers import AutoTokenizer, PreTrainedModel

        from ..modeling_llada import LLaDAModelLM

        if device is None or (str(device).startswith("cuda") and not torch.cuda.is_available()):
            if device is not None:  # lm-eval's own --device defaults to cuda: use the CPU when there is none
                logger.warning(f"llada: device {device!r} is not available here; running on the CPU")
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if isinstance(pretrained, PreTrainedModel):
            model = pretrained
        else:
            if dtype == "auto":
                torch_dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
            elif dtype in _DTYPES:
                torch_dtype = _DTYPES[dtype]
            else:
                raise ValueError(f"dtype ({dtype!r}) must be 'auto' or one of {sorted(_DTYPES)}.")
            model = LLaDAModelLM.from_pretrained(pretrained, dtype=torch_dtype)
        if tokenizer is None and not isinstance(pretrained, str):
            raise ValueError("pass tokenizer=... (a path or a tokenizer) when pretrained is a model object.")
        if tokenizer is None or isinstance(tokenizer, str):
            tokenizer = AutoTokenizer.from_pretrained(
                tokenizer or pretrained, trust_remote_code=_as_bool(trust_remote_code)
            )
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self._device = torch.device(device)
        self.mc_num = int(mc_num)
        if mc_batch_size is None:  # the published group of 16, or the largest divisor of mc_num below it
            mc_batch_size = published_group_size(self.mc_num)
        self.mc_batch_size = int(mc_batch_size)
        self.estimator = estimator
        self.cfg_scale = float(cfg_scale)
        self.max_batch_tokens = int(max_batch_tokens)
        self.check_greedy = _as_bool(check_greedy)
        self.context_length = int(context_length)
        self.max_length = int(max_length or model.config.max_sequence_length)
        # lm-eval's --batch_size: requests scored per call (rows are packed by max_batch_tokens regardless).
        self.requests_per_call = 64 if str(batch_size).startswith("auto") else max(1, int(batch_size))
        self.generation_defaults = dict(
            max_new_tokens=int(max_new_tokens),
            steps=None if steps is None else int(steps),
            block_length=None if block_length is None else int(block_length),
            temperature=float(temperature),
            remasking=remasking,
            cfg_scale=float(gen_cfg_scale),
        )
        self.generator = torch.Generator().manual_seed(int(seed))
        # Fail now, not after the data set is loaded, on bad likelihood settings.
        if self.estimator == "published" and self.mc_num % self.mc_batch_size:
            raise ValueError(
                f"mc_num ({self.mc_num}) must be a multiple of mc_batch_size ({self.mc_batch_size}) for the "
                "published estimator; change one of them or use estimator=stratified."
            )

    def _bar_disabled(self, disable_tqdm: bool) -> bool | None:
        """tqdm's `disable`: off when asked or off rank 0, else None (drawn only when stderr is a terminal)."""
        return True if disable_tqdm or self.rank != 0 else None

    @property
    def device(self):
        return self._device

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        if chat_template is False or chat_template is None:
            return None
        return chat_template if isinstance(chat_template, str) else self.tokenizer.chat_template

    # ------------------------------------------------------------------------------------------------------------
    # Tokenization
    # ------------------------------------------------------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of (context, continuation), the context left-truncated so that the pair fits `max_length`.

        Trailing spaces of the context move to the continuation, and the pair is tokenized as one string and then
        split, so that the continuation's first token is the one the tokenizer produces in context.
        """
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self._encode(context + continuation)
        context_ids = self._encode(context) if context else []
        answer = whole[len(context_ids) :]
        if len(answer) > self.max_length:
            raise ValueError(
                f"a continuation of {len(answer)} tokens is longer than max_length ({self.max_length}); "
                "shorten it or use loglikelihood_rolling."
            )
        context_ids = context_ids[max(0, len(context_ids) + len(answer) - self.max_length) :]
        return context_ids, answer

    # ------------------------------------------------------------------------------------------------------------
    # Requests
    # ------------------------------------------------------------------------------------------------------------

    def _score(self, prompts: list[list[int]], answers: list[list[int]]) -> list[float]:
        """Bound estimates of many pairs, `requests_per_call` pairs per `log_likelihood` call (0 for empty answers)."""
        out = [0.0] * len(answers)
        todo = [i for i, answer in enumerate(answers) if answer]
        for start in range(0, len(todo), self.requests_per_call):
            part = todo[start : start + self.requests_per_call]
            scores = self.model.log_likelihood(
                [prompts[i] for i in part],
                [answers[i] for i in part],
                mc_num=self.mc_num,
                batch_size=self.mc_batch_size,
                cfg_scale=self.cfg_scale,
                generator=self.generator,
                estimator=self.estimator,
                max_batch_tokens=self.max_batch_tokens,
            )
            for i, score in zip(part, scores.tolist(), strict=True):
                out[i] = score
        return out

    @torch.no_grad()
    def _is_greedy(self, prompt: list[int], answer: list[int]) -> bool:
        """Whether low-confidence decoding, one token per step, reproduces the answer."""
        if not self.check_greedy or not answer:
            return False
        ids = torch.tensor([prompt], dtype=torch.long, device=self.device)
        n = len(answer)
        out = self.model.generate(
            ids, max_new_tokens=n, steps=n, block_length=n, temperature=0.0, remasking="low_confidence"
        )
        return out[0, len(prompt) :].tolist() == answer

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [self.encode_pair(*request.args) for request in requests]
        scores = []
        bar = tqdm(total=len(pairs), desc="loglikelihood", disable=self._bar_disabled(disable_tqdm))
        for start in range(0, len(pairs), self.requests_per_call):
            part = pairs[start : start + self.requests_per_call]
            scores += self._score([p for p, _ in part], [a for _, a in part])
            bar.update(len(part))
        bar.close()
        results = []
        for request, (prompt, answer), score in zip(requests, pairs, scores, strict=True):
            result = (score, self._is_greedy(prompt, answer))
            self.cache_hook.add_partial("loglikelihood", request.args, result)
            results.append(result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """The bound of each whole text: chunks of `max_length - context_length` tokens, each given up to
        `context_length` preceding tokens (see `llada.evaluation.perplexity`)."""
        results = []
        for request in tqdm(requests, desc="loglikelihood_rolling", disable=self._bar_disabled(disable_tqdm)):
            (text,) = request.args[:1]
            pairs = chunk_pairs(self._encode(text), self.max_length - self.context_length, self.context_length)
            score = sum(self._score([p for p, _ in pairs], [a for _, a in pairs]))
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, score)
            results.append(score)
        return results

    def _generation_settings(self, gen_kwargs: dict) -> tuple[dict, list[str]]:
        kwargs = dict(gen_kwargs)
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        settings = dict(self.generation_defaults)
        if "max_gen_toks" in kwargs:
            settings["max_new_tokens"] = int(kwargs.pop("max_gen_toks"))
        if kwargs.pop("do_sample", None) is False:
            settings["temperature"] = 0.0
        for key in ("temperature", "steps", "block_length", "remasking", "cfg_scale"):
            if key in kwargs:
                settings[key] = kwargs.pop(key)
        n = settings["max_new_tokens"]
        settings["steps"] = int(settings["steps"] or n)
        settings["block_length"] = int(settings["block_length"] or n)
        return settings, until

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Requests with the same settings are generated together (left-padded), `requests_per_call` at a time."""
        from ..generation_llada import decode_generation

        jobs: dict[tuple, list[int]] = {}
        plans = []
        for index, request in enumerate(requests):
            context, gen_kwargs = request.args
            settings, until = self._generation_settings(gen_kwargs)
            prompt = self._encode(context)
            prompt = prompt[max(0, len(prompt) + settings["max_new_tokens"] - self.max_length) :]
            plans.append((prompt, settings, until))
            jobs.setdefault(tuple(sorted(settings.items())), []).append(index)
        results = [""] * len(requests)
        pad_id = self.model.config.pad_token_id
        pad_id = self.model.config.eos_token_id if pad_id is None else pad_id
        bar = tqdm(total=len(requests), desc="generate_until", disable=self._bar_disabled(disable_tqdm))
        for indices in jobs.values():
            for start in range(0, len(indices), self.requests_per_call):
                part = indices[start : start + self.requests_per_call]
                width = max(len(plans[i][0]) for i in part)
                ids = torch.tensor([[pad_id] * (width - len(plans[i][0])) + plans[i][0] for i in part])
                mask = torch.tensor([[0] * (width - len(plans[i][0])) + [1] * len(plans[i][0]) for i in part])
                out = self.model.generate(
                    ids.to(self.device), attention_mask=mask.to(self.device), **plans[part[0]][1]
                )
                for i, text in zip(part, decode_generation(self.tokenizer, out, width), strict=True):
                    for stop in plans[i][2]:
                        text = text.split(stop)[0]
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                    results[i] = text
                bar.update(len(part))
        bar.close()
        return results


def main(argv: list[str] | None = None) -> None:
    """Run lm-eval's command line with the `llada` model registered (for lm-eval without entry-point discovery)."""
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm-eval", *(sys.argv[1:] if argv is None else argv)]
    cli_evaluate()


if __name__ == "__main__":
    main()
