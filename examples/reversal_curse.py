"""The reversal curse at toy scale: a masked diffusion model (LLaDA) against an autoregressive model (Llama) of the
same size, trained on the same synthetic facts with the same budget.

    python examples/reversal_curse.py                 # the full run: 3 seeds, then docs/reversal_curse.md
    python examples/reversal_curse.py --quick         # a smoke test of the whole pipeline (seconds, used by the tests)
    python examples/reversal_curse.py --summarize     # rebuild the table from the saved per-seed results
    python examples/reversal_curse.py --plot          # draw docs/reversal_curse.png (needs matplotlib)

The data. Every fact links two made-up single-token names by a relation that has an inverse ("parent" / "child",
"teacher" / "student", ...). A fact is written forward ("Kalo is the parent of Brimu .") or reversed ("Brimu is the
child of Kalo ."). As in the published reversal studies, half of the facts are trained in both directions (so that
the models can learn that the two forms go together) and the other half in the forward direction only; the test is
the reversed form of the forward-only facts.

The models. A tiny LLaDA trained with `LLaDATrainer` (masked diffusion loss) and a `LlamaForCausalLM` trained with
transformers' `Trainer` (next-token loss): same width, depth, heads, MLP and vocabulary (the same number of
parameters), the same rows in the same order, the same optimizer (AdamW), learning rate schedule and number of
steps.

The evaluation. Each question ("Brimu is the child of") gets 10 candidate answers (the true name and 9 other names of
the same role), the same for both models; a model answers with the candidate it scores highest: LLaDA by
`model.log_likelihood` (the diffusion bound of "name . <eos>" given the question), Llama by its exact
log-probability of the same tokens. Also reported: greedy answers over the whole vocabulary (LLaDA `generate`,
Llama argmax), LLaDA filling the masked subject of the forward sentence ("<mask> is the parent of Brimu .", a
question only a bidirectional model can be asked), the likelihood of the unseen reversed sentences (LLaDA's bound
against Llama's exact NLL, nats/token), and the forward passes `generate` saves by skipping steps that unmask
nothing (RADD: the network does not take the time step, so a step that changes nothing needs no recomputation).
"""

import argparse
import json
import multiprocessing
import os
import random
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")  # before torch: see tests/conftest.py

import torch  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import (  # noqa: E402
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
)

from llada import LLaDAConfig, LLaDAModelLM  # noqa: E402
from llada.training import LLaDAPretrainingCollator, LLaDATrainer, LLaDATrainingArguments  # noqa: E402
from llada.training.tokenizer import BOS_TOKEN, EOS_TOKEN, MASK_TOKEN  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"
RELATIONS = (
    ("parent", "child"),
    ("teacher", "student"),
    ("employer", "employee"),
    ("mentor", "apprentice"),
    ("doctor", "patient"),
    ("coach", "player"),
    ("landlord", "tenant"),
    ("grandparent", "grandchild"),
)
ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "st", "tr")
VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
CODAS = ("", "n", "r", "l", "s", "m")
NUM_CANDIDATES = 10
ROW = 9  # <bos> A is the rel of B . <eos>

# ---------------------------------------------------------------------------------------------------------------------
# Data


def all_names() -> list[str]:
    """Two-syllable names from fixed syllable vocabularies (14,400 of them), sorted."""
    syllables = [o + v + c for o in ONSETS for v in VOWELS for c in CODAS]
    return sorted({(a + b).capitalize() for a in syllables[:120] for b in syllables[-120:]})


def make_facts(num_pairs: int, seed: int) -> list[dict]:
    """`num_pairs` facts (a, relation, b), distinct names; the first half trained both ways, the rest forward only."""
    rng = random.Random(seed)
    names = rng.sample(all_names(), 2 * num_pairs)
    facts = []
    for i in range(num_pairs):
        forward, reverse = RELATIONS[rng.randrange(len(RELATIONS))]
        facts.append(
            {"a": names[2 * i], "b": names[2 * i + 1], "rel": forward, "inv": reverse, "both": i < num_pairs // 2}
        )
    return facts


def forward_words(f: dict) -> list[str]:
    return [f["a"], "is", "the", f["rel"], "of", f["b"], "."]


def reverse_words(f: dict) -> list[str]:
    return [f["b"], "is", "the", f["inv"], "of", f["a"], "."]


def build_tokenizer(facts: list[dict]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: one token per name, relation and function word."""
    words = ["is", "the", "of", "."] + [r for pair in RELATIONS for r in pair]
    words += sorted({f[k] for f in facts for k in ("a", "b")})
    vocab = {token: i for i, token in enumerate([BOS_TOKEN, EOS_TOKEN, MASK_TOKEN, "<unk>"] + words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        mask_token=MASK_TOKEN,
        unk_token="<unk>",
    )


def encode(tokenizer, words: list[str]) -> list[int]:
    return tokenizer.convert_tokens_to_ids(words)


def training_rows(facts, tokenizer, epochs: int, seed: int) -> list[list[int]]:
    """`<bos> sentence <eos>` rows: every fact forward, the `both` half reversed too; reshuffled every epoch."""
    sentences = [forward_words(f) for f in facts] + [reverse_words(f) for f in facts if f["both"]]
    base = [[tokenizer.bos_token_id] + encode(tokenizer, s) + [tokenizer.eos_token_id] for s in sentences]
    rng = random.Random(seed)
    rows = []
    for _ in range(epochs):
        epoch = list(base)
        rng.shuffle(epoch)
        rows.extend(epoch)
    return rows


def questions(facts, pool_facts, tokenizer, direction: str, seed: int) -> list[dict]:
    """One question per fact: prompt ids, the index of the true answer, and 10 candidate answers (`name . <eos>`):
    the true one and 9 names of the same role drawn from `pool_facts`."""
    rng = random.Random(seed)
    subject, answer, relation = ("a", "b", "rel") if direction == "forward" else ("b", "a", "inv")
    pool = sorted({f[answer] for f in pool_facts})
    out = []
    for f in facts:
        names = [f[answer]] + rng.sample([n for n in pool if n != f[answer]], NUM_CANDIDATES - 1)
        rng.shuffle(names)
        prompt = [tokenizer.bos_token_id] + encode(tokenizer, [f[subject], "is", "the", f[relation], "of"])
        candidates = [encode(tokenizer, [n, "."]) + [tokenizer.eos_token_id] for n in names]
        out.append({"prompt": prompt, "candidates": candidates, "target": names.index(f[answer])})
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Models and training


def model_configs(tokenizer, args):
    common = dict(vocab_size=len(tokenizer), max_sequence_length=16)
    llada = LLaDAConfig(
        d_model=args.d_model,
        n_heads=args.n_heads,
        n_kv_heads=args.n_heads,
        n_layers=args.n_layers,
        mlp_hidden_size=args.mlp_hidden_size,
        embedding_size=len(tokenizer),
        rope_theta=10000.0,
        mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        **common,
    )
    llama = LlamaConfig(
        hidden_size=args.d_model,
        num_attention_heads=args.n_heads,
        num_key_value_heads=args.n_heads,
        num_hidden_layers=args.n_layers,
        intermediate_size=args.mlp_hidden_size,
        vocab_size=len(tokenizer),
        max_position_embeddings=16,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    return llada, llama


def training_arguments(cls, output_dir: Path, args, seed: int, **extra):
    return cls(
        output_dir=str(output_dir),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,  # the rows already hold every epoch, shuffled
        learning_rate=args.learning_rate,
        weight_decay=0.01,
        adam_beta2=0.98,
        warmup_steps=0.05,
        lr_scheduler_type="cosine",
        max_grad_norm=1.0,
        logging_steps=50,
        disable_tqdm=True,
        save_strategy="no",
        report_to=[],
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        use_cpu=True,
        **extra,
    )


class InOrder(torch.utils.data.Dataset):
    """The rows as a dataset; both trainers read them in this order (shuffling is done per epoch beforehand)."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return {"input_ids": self.rows[i]}


def sequential(trainer_class):
    class Sequential(trainer_class):
        def _get_train_sampler(self, *args, **kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    Sequential.__name__ = trainer_class.__name__
    return Sequential


def causal_collator(examples):
    ids = torch.tensor([e["input_ids"] for e in examples], dtype=torch.long)
    return {"input_ids": ids, "labels": ids.clone()}


def train_llada(config, tokenizer, rows, args, seed, work: Path):
    torch.manual_seed(seed)
    model = LLaDAModelLM(config)
    trainer = sequential(LLaDATrainer)(
        model=model,
        args=training_arguments(LLaDATrainingArguments, work / "llada", args, seed, random_length_prob=0.0),
        train_dataset=InOrder(rows),
        data_collator=LLaDAPretrainingCollator(tokenizer, max_length=ROW, packed=True),
    )
    trainer.train()
    return model.eval(), trainer.state


def train_llama(config, rows, args, seed, work: Path):
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    trainer = sequential(Trainer)(
        model=model,
        args=training_arguments(TrainingArguments, work / "llama", args, seed),
        train_dataset=InOrder(rows),
        data_collator=causal_collator,
    )
    trainer.train()
    return model.eval(), trainer.state


def _train_llama_to_disk(config, rows, args, seed, work: Path):
    start = time.monotonic()
    torch.set_num_threads(max(1, args.threads))
    model, state = train_llama(config, rows, args, seed, work)
    model.save_pretrained(work / "llama" / "final")
    record = {"global_step": state.global_step, "log_history": state.log_history}
    record["minutes"] = (time.monotonic() - start) / 60
    (work / "llama" / "final" / "train_state.json").write_text(json.dumps(record))


def final_loss(state) -> float:
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    return losses[-1] if losses else float("nan")


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def llama_scores(model, prompts: list[list[int]], answers: list[list[int]]) -> torch.Tensor:
    """Exact log p(answer | prompt) under the ARM, for pairs of equal lengths (one batched forward pass)."""
    ids = torch.tensor([p + a for p, a in zip(prompts, answers, strict=False)], dtype=torch.long)
    logp = torch.log_softmax(model(ids).logits[:, :-1].float(), dim=-1)
    token_logp = logp.gather(-1, ids[:, 1:, None])[..., 0]  # (N, T - 1): log p(ids[t] | ids[:t])
    start = len(prompts[0]) - 1
    return token_logp[:, start:].sum(dim=1).double()


def rank_accuracy(qs, score_fn) -> float:
    correct = 0
    for q in qs:
        scores = score_fn(q["prompt"], q["candidates"])
        correct += int(int(torch.argmax(scores)) == q["target"])
    return correct / len(qs)


def evaluate(llada, llama, tokenizer, facts, args, seed) -> dict:
    forward_only = [f for f in facts if not f["both"]]
    both = [f for f in facts if f["both"]]
    test = forward_only[: args.eval_pairs]
    generator = torch.Generator().manual_seed(seed)

    def llada_score(prompt, candidates):
        return llada.log_likelihood(
            prompt, candidates, mc_num=args.mc_num, estimator="stratified", generator=generator
        )

    def llama_score(prompt, candidates):
        return llama_scores(llama, [prompt] * len(candidates), candidates)

    results = {}
    for name, group, direction in (
        ("forward", forward_only, "forward"),
        ("reverse", forward_only, "reverse"),
        ("reverse_trained", both, "reverse"),
    ):
        qs = questions(group[: args.eval_pairs], group, tokenizer, direction, seed + 1)
        results[f"llada_{name}"] = rank_accuracy(qs, llada_score)
        results[f"llama_{name}"] = rank_accuracy(qs, llama_score)

    # Greedy answers over the whole vocabulary (no candidates).
    for direction in ("forward", "reverse"):
        qs = questions(test, forward_only, tokenizer, direction, seed + 1)
        prompts = torch.tensor([q["prompt"] for q in qs])
        truth = torch.tensor([q["candidates"][q["target"]][0] for q in qs])
        out = llada.generate(prompts, max_new_tokens=3, steps=3, block_length=3, temperature=0.0)
        results[f"llada_greedy_{direction}"] = float((out[:, prompts.shape[1]] == truth).float().mean())
        arm = llama(prompts).logits[:, -1].argmax(-1)
        results[f"llama_greedy_{direction}"] = float((arm == truth).float().mean())

    # LLaDA only: the masked subject of the forward sentence, "<mask> is the rel of B ." (infilling).
    rows = torch.tensor(
        [[tokenizer.bos_token_id, tokenizer.mask_token_id] + encode(tokenizer, forward_words(f)[1:]) for f in test]
    )
    rows = torch.cat((rows, torch.full((len(test), 1), tokenizer.eos_token_id)), dim=1)
    filled = llada.generate(rows, max_new_tokens=0, steps=1, temperature=0.0)
    truth = torch.tensor(encode(tokenizer, [f["a"] for f in test]))
    results["llada_masked_subject"] = float((filled[:, 1] == truth).float().mean())

    # Likelihood of sentences (nats/token over the 8 tokens after <bos>): unseen reversed sentences (the test split)
    # and, for reference, trained forward sentences.
    for split, words_of in (("test", reverse_words), ("train", forward_words)):
        sentences = [encode(tokenizer, words_of(f)) + [tokenizer.eos_token_id] for f in test[: args.nll_sentences]]
        bos = [[tokenizer.bos_token_id]] * len(sentences)
        bound = llada.log_likelihood(
            bos, sentences, mc_num=args.nll_mc_num, estimator="stratified", generator=generator
        )
        tokens = len(sentences[0])
        results[f"llada_nll_{split}"] = float(-bound.mean() / tokens)
        results[f"llama_nll_{split}"] = float(-llama_scores(llama, bos, sentences).mean() / tokens)
    return results


def radd_savings(llada, tokenizer, facts, args) -> list[dict]:
    """Forward passes of `generate` (its `nfe` counter) against the nominal steps: completing `<bos> A` into a sentence
    (7 new tokens: "is the rel of B . <eos>") one prompt at a time."""
    test = [f for f in facts if not f["both"]][: args.radd_prompts]
    prompts = [torch.tensor([[tokenizer.bos_token_id] + encode(tokenizer, [f["a"]])]) for f in test]
    expected = [encode(tokenizer, forward_words(f)[1:]) + [tokenizer.eos_token_id] for f in test]
    settings = [
        ("steps = masks", dict(steps=7)),
        ("steps = 2 x masks", dict(steps=14)),
        ("steps = 64 (> masks)", dict(steps=64)),
        ("parallel: threshold 0.9", dict(steps=7, threshold=0.9)),
        ("parallel: threshold 0.7", dict(steps=7, threshold=0.7)),
        ("parallel: threshold 0.9, steps = 64", dict(steps=64, threshold=0.9)),
    ]
    rows = []
    for label, options in settings:
        nfe, exact = [], 0
        for prompt, want in zip(prompts, expected, strict=False):
            out = llada.generate(
                prompt, max_new_tokens=7, block_length=7, temperature=0.0, return_dict_in_generate=True, **options
            )
            nfe.append(out.nfe)
            exact += int(out.sequences[0, 2:].tolist() == want)
        rows.append(
            {
                "setting": label,
                "steps": options["steps"],
                "nfe": statistics.mean(nfe),
                "saved": 1 - statistics.mean(nfe) / options["steps"],
                "exact_fact": exact / len(prompts),
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# Runs, summary, plot


def run_seed(seed: int, args) -> dict:
    start = time.monotonic()
    facts = make_facts(args.pairs, seed)
    tokenizer = build_tokenizer(facts)
    rows = training_rows(facts, tokenizer, args.epochs, seed)
    llada_config, llama_config = model_configs(tokenizer, args)
    work = args.output_dir / f"seed-{seed}"
    child = None
    if args.parallel:  # Llama trains in a second process meanwhile (one core each)
        child = multiprocessing.get_context("fork").Process(
            target=_train_llama_to_disk, args=(llama_config, rows, args, seed, work)
        )
        child.start()
    llada, llada_state = train_llada(llada_config, tokenizer, rows, args, seed, work)
    llada_minutes = (time.monotonic() - start) / 60
    if child is not None:
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"training Llama failed (exit code {child.exitcode}); see the log above.")
        llama = LlamaForCausalLM.from_pretrained(work / "llama" / "final").eval()
        saved = json.loads((work / "llama" / "final" / "train_state.json").read_text())
        llama_state = SimpleNamespace(global_step=saved["global_step"], log_history=saved["log_history"])
        llama_minutes = saved["minutes"]
    else:
        llama, llama_state = train_llama(llama_config, rows, args, seed, work)
        llama_minutes = (time.monotonic() - start) / 60 - llada_minutes
    result = {
        "seed": seed,
        "pairs": args.pairs,
        "train_rows": len(rows),
        "steps": llada_state.global_step,
        "llama_steps": llama_state.global_step,
        "tokens_seen": len(rows) * ROW,
        "llada_params": sum(p.numel() for p in llada.parameters()),
        "llama_params": sum(p.numel() for p in llama.parameters()),
        "llada_final_loss": final_loss(llada_state),
        "llama_final_loss": final_loss(llama_state),
        "llada_train_minutes": llada_minutes,
        "llama_train_minutes": llama_minutes,
        "eval_pairs": min(args.eval_pairs, args.pairs - args.pairs // 2),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    result.update(evaluate(llada, llama, tokenizer, facts, args, seed))
    result["radd"] = radd_savings(llada, tokenizer, facts, args)
    result["minutes"] = (time.monotonic() - start) / 60
    return result


def mean_std(values) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def load_results(output_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(output_dir.glob("seed-*.json"))]


ACCURACY_ROWS = (
    ("forward (trained direction), ranking 10 candidates", "forward"),
    ("**reverse (never trained), ranking 10 candidates**", "reverse"),
    ("reverse of facts trained both ways, ranking", "reverse_trained"),
    ("forward, greedy over the whole vocabulary", "greedy_forward"),
    ("reverse, greedy over the whole vocabulary", "greedy_reverse"),
)


def summary_markdown(results: list[dict]) -> str:
    r0 = results[0]
    seeds = ", ".join(str(r["seed"]) for r in results)
    lines = [
        f"Seeds {seeds}; mean ± standard deviation over the {len(results)} seeds. {r0['pairs']} facts per seed "
        f"({r0['pairs'] // 2} trained both ways, {r0['pairs'] - r0['pairs'] // 2} forward only), "
        f"{r0['eval_pairs']} test questions per direction; chance with 10 candidates = 0.100.",
        "",
        "| accuracy | LLaDA (MDM) | Llama (ARM) |",
        "|---|---|---|",
    ]
    for label, key in ACCURACY_ROWS:
        llada = [r[f"llada_{key}"] for r in results]
        llama = [r[f"llama_{key}"] for r in results]
        lines.append(f"| {label} | {mean_std(llada)} | {mean_std(llama)} |")
    lines.append(
        f"| masked subject of the forward sentence, greedy (`<mask> is the parent of B .`) | "
        f"{mean_std([r['llada_masked_subject'] for r in results])} | (not askable) |"
    )
    lines += [
        "",
        "| nats/token (8 tokens after `<bos>`) | LLaDA: bound (`log_likelihood`) | Llama: exact NLL |",
        "|---|---|---|",
        f"| test split: the unseen reversed sentences | {mean_std([r['llada_nll_test'] for r in results])} | "
        f"{mean_std([r['llama_nll_test'] for r in results])} |",
        f"| trained forward sentences | {mean_std([r['llada_nll_train'] for r in results])} | "
        f"{mean_std([r['llama_nll_train'] for r in results])} |",
        "",
        "| per seed | steps | rows (tokens) | parameters LLaDA / Llama | final train loss LLaDA / Llama | "
        "train minutes LLaDA / Llama | total minutes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['seed']} | {r['steps']} / {r['llama_steps']} | {r['train_rows']:,} ({r['tokens_seen']:,}) | "
            f"{r['llada_params']:,} / {r['llama_params']:,} | {r['llada_final_loss']:.3f} / "
            f"{r['llama_final_loss']:.3f} | {r['llada_train_minutes']:.1f} / {r['llama_train_minutes']:.1f} | "
            f"{r['minutes']:.1f} |"
        )
    lines += [
        "",
        "RADD (forward passes of `generate`, its `nfe`, against the nominal steps; completing `<bos> A` with 7 new "
        f"tokens, {r0['args']['radd_prompts']} prompts one at a time, temperature 0; `exact fact` = the completion "
        "is the trained sentence):",
        "",
        "| setting | nominal steps | forward passes (mean) | saved | exact fact |",
        "|---|---|---|---|---|",
    ]
    for i, row in enumerate(r0["radd"]):
        nfe = [r["radd"][i]["nfe"] for r in results]
        saved = [r["radd"][i]["saved"] for r in results]
        exact = [r["radd"][i]["exact_fact"] for r in results]
        lines.append(
            f"| {row['setting']} | {row['steps']} | {statistics.mean(nfe):.2f} | {statistics.mean(saved):.1%} | "
            f"{statistics.mean(exact):.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("forward", "forward"), ("reverse", "reverse\n(never trained)"), ("reverse_trained", "reverse\n(trained)")]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    width = 0.38
    for offset, (model, label, color) in enumerate(
        (("llada", "LLaDA (masked diffusion)", "tab:blue"), ("llama", "Llama (autoregressive)", "tab:orange"))
    ):
        means = [statistics.mean(r[f"{model}_{k}"] for r in results) for k, _ in keys]
        errs = [statistics.stdev(r[f"{model}_{k}"] for r in results) if len(results) > 1 else 0 for k, _ in keys]
        xs = [i + (offset - 0.5) * width for i in range(len(keys))]
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=label, color=color)
        for x, m, e in zip(xs, means, errs, strict=True):
            ax.text(x, m + e + 0.02, f"{m:.2f}", ha="center", fontsize=8)
    ax.axhline(1 / NUM_CANDIDATES, color="gray", linestyle="--", linewidth=1, label="chance (10 candidates)")
    ax.set_xticks(range(len(keys)), [label for _, label in keys])
    ax.set_ylim(0, 1.4)
    ax.set_ylabel("accuracy (ranking 10 candidates)")
    seeds = ", ".join(str(r["seed"]) for r in results)
    ax.set_title(f"Reversal curse: {results[0]['pairs']} facts, seeds {seeds} (mean ± sd)", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def run_command(result: dict) -> str:
    """The command that reproduces a saved run (its non-default sizes and budgets)."""
    saved, defaults = result["args"], vars(parse_args([]))
    parts = ["python examples/reversal_curse.py"]
    for key in ("pairs", "epochs", "batch_size", "learning_rate", "eval_pairs", "radd_prompts", "output_dir"):
        default = str(defaults[key]) if isinstance(defaults[key], Path) else defaults[key]
        if saved[key] != default:
            value = saved[key]
            if key == "output_dir" and Path(value).is_absolute() and Path(value).is_relative_to(REPO_ROOT):
                value = Path(value).relative_to(REPO_ROOT)
            parts.append(f"--{key.replace('_', '-')} {value}")
    return " ".join(parts)


def write_docs(results: list[dict], name: str):
    """Write the summary into docs/reversal_curse.md between the markers of this run (`name`: its output folder)."""
    path = DOCS / "reversal_curse.md"
    text = path.read_text() if path.exists() else ""
    begin, end = f"<!-- results:{name}:begin -->", f"<!-- results:{name}:end -->"
    block = f"{begin}\n\nCommand: `{run_command(results[0])}`\n\n{summary_markdown(results)}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text + ("\n" if text else "") + block + "\n"
    path.write_text(text)
    print(f"wrote {path}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny smoke test of the whole pipeline (seconds)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pairs", type=int, default=200, help="facts per seed (half trained both ways)")
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--n-layers", type=int, default=4)
    parser.add_argument("--mlp-hidden-size", type=int, default=384)
    parser.add_argument("--eval-pairs", type=int, default=500, help="test questions per direction")
    parser.add_argument("--mc-num", type=int, default=12, help="Monte Carlo rows of LLaDA's bound per candidate")
    parser.add_argument("--nll-sentences", type=int, default=100)
    parser.add_argument("--nll-mc-num", type=int, default=64)
    parser.add_argument("--radd-prompts", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument(
        "--sequential", dest="parallel", action="store_false", help="train Llama after LLaDA, not in a second process"
    )
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "runs" / "reversal_curse")
    parser.add_argument(
        "--summarize", action="store_true", help="only rebuild docs/reversal_curse.md from the results"
    )
    parser.add_argument("--plot", action="store_true", help="only draw docs/reversal_curse.png from the results")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/reversal_curse.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.pairs, args.epochs, args.batch_size = args.seeds[:1], 40, 2, 16
        args.d_model, args.n_layers, args.mlp_hidden_size, args.n_heads = 32, 2, 64, 2
        args.eval_pairs, args.mc_num, args.nll_sentences, args.nll_mc_num, args.radd_prompts = 8, 4, 8, 8, 2
        args.no_docs, args.parallel = True, False
    if args.pairs < 4:
        raise SystemExit(f"--pairs ({args.pairs}) must be at least 4 (half of them are the test facts).")
    if args.pairs - args.pairs // 2 < NUM_CANDIDATES:
        args.eval_pairs = min(args.eval_pairs, args.pairs - args.pairs // 2)
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.summarize or args.plot:
        results = load_results(args.output_dir)
        if not results:
            raise SystemExit(f"no results in {args.output_dir}: run the experiment first.")
        if args.summarize:
            print(summary_markdown(results))
            write_docs(results, args.output_dir.name)
        if args.plot:
            plot(results, DOCS / f"{args.output_dir.name}.png")
        return results
    args.output_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:
        result = run_seed(seed, args)
        results.append(result)
        (args.output_dir / f"seed-{seed}.json").write_text(json.dumps(result, indent=1))
        print(json.dumps({k: v for k, v in result.items() if k not in ("args", "radd")}, indent=1), flush=True)
    print(summary_markdown(results))
    if not args.no_docs:
        write_docs(results, args.output_dir.name)
    return results


if __name__ == "__main__":
    main()
