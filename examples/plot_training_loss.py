"""Plot the training loss of a `Trainer` / `LLaDATrainer` run from its `trainer_state.json`.

    pip install matplotlib
    python examples/plot_training_loss.py src/llada/demo/model/trainer_state.json docs/demo_pretraining_loss.png

The loss is the masked-diffusion bound per token (nats); evaluation points, when logged, are drawn as dots.
"""

import argparse
import json
from pathlib import Path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trainer_state", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--title", default="LLaDA demo model: pretraining on the King James Bible (CPU)")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = json.loads(args.trainer_state.read_text())["log_history"]
    train = [(entry["step"], entry["loss"]) for entry in history if "loss" in entry]
    evaluation = [(entry["step"], entry["eval_loss"]) for entry in history if "eval_loss" in entry]
    figure, axis = plt.subplots(figsize=(8, 4.5), dpi=100)
    axis.plot(*zip(*train, strict=True), linewidth=1, label="training loss (bound, nats/token)")
    if evaluation:
        axis.plot(*zip(*evaluation, strict=True), "o", label="held-out loss")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss")
    axis.set_title(args.title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output)
    print(f"wrote {args.output} ({len(train)} training points, {len(evaluation)} evaluation points)")


if __name__ == "__main__":
    main()
