"""A 2-process `accelerate launch` DDP run on CPU (gloo): one optimizer step over 4 rows split across the processes
gives the update of one process with all 4 rows (same masks), and the logged loss of the whole step."""

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = '''
import json, sys
from pathlib import Path

import torch

from llada import LLaDAConfig, LLaDAModelLM
from llada.masking_llada import forward_mask, sample_mask_probability
from llada.training import IGNORE_INDEX, LLaDATrainer, LLaDATrainingArguments


def rows():
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(4):
        ids = torch.randint(0, 98, (12,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * 3 + ids[3:]})
    return out


def collate(examples):
    return {k: torch.tensor([e[k] for e in examples]) for k in ("input_ids", "labels")}


class ContentMaskTrainer(LLaDATrainer):
    """Masks from each row's content: the same whichever process or micro-batch holds the row."""

    def sample_masks(self, input_ids, maskable, generator):
        masks, ps = [], []
        for row, row_maskable in zip(input_ids, maskable):
            g = torch.Generator().manual_seed(int((row * torch.arange(1, len(row) + 1)).sum()))
            p = sample_mask_probability(1, generator=g)
            masks.append(forward_mask((1, len(row)), p, row_maskable[None], generator=g))
            ps.append(p)
        return torch.cat(masks), torch.cat(ps)


def run(output_dir, per_device_batch):
    torch.manual_seed(0)
    config = LLaDAConfig(d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=48, vocab_size=100,
                         embedding_size=104, max_sequence_length=64, mask_token_id=99, eos_token_id=98,
                         pad_token_id=98)
    model = LLaDAModelLM(config)
    args = LLaDATrainingArguments(
        output_dir=output_dir, report_to="none", use_cpu=True, disable_tqdm=True, save_strategy="no",
        dataloader_pin_memory=False, random_length_prob=0.0, seed=0, logging_steps=1, max_steps=1,
        per_device_train_batch_size=per_device_batch, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant",
        max_grad_norm=0.0, weight_decay=0.0,
    )
    trainer = ContentMaskTrainer(model=model, args=args, train_dataset=rows(), data_collator=collate)
    trainer.train()
    loss = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    return trainer, {k: v.detach().clone() for k, v in model.named_parameters()}, loss


if __name__ == "__main__":
    out = Path(sys.argv[1])
    trainer, params, loss = run(str(out), per_device_batch=2)
    if trainer.args.process_index == 0:
        torch.save(params, out / "params.pt")
        (out / "result.json").write_text(json.dumps({"loss": loss, "world_size": trainer.args.world_size}))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location("llada_ddp_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_process_ddp_matches_one_process(tmp_path):
    script = tmp_path / "ddp_script.py"
    script.write_text(SCRIPT)
    out = tmp_path / "ddp"
    out.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    # README's recipe for N CPU processes: `--multi_gpu` is accelerate's torchrun launcher; the script's
    # `use_cpu=True` keeps the processes on the CPU (accelerate's `--cpu` launcher needs MPI for more than one).
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    recipe = next(line for line in readme.splitlines() if line.startswith("accelerate launch --multi_gpu"))
    flags = recipe.split()[2 : recipe.split().index("train.py")]
    assert flags[flags.index("--num_processes") + 1] == "2"
    command = [sys.executable, "-m", "accelerate.commands.launch", *flags, "--main_process_port", str(free_port())]
    command += [str(script), str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ddp = json.loads((out / "result.json").read_text())
    assert ddp["world_size"] == 2
    ddp_params = torch.load(out / "params.pt", weights_only=True)

    _, single_params, single_loss = load_script(script).run(str(tmp_path / "single"), per_device_batch=4)
    assert ddp["loss"] == single_loss or abs(ddp["loss"] - single_loss) < 1e-5 * abs(single_loss)
    for name, value in single_params.items():
        torch.testing.assert_close(ddp_params[name], value, atol=2e-6, rtol=1e-5, msg=name)
