"""Fine-tune a LLaDA checkpoint with LoRA on prompt/response pairs, merge the adapters and generate.

    python examples/finetune_lora.py --model path/to/llada --data chats.jsonl --output-dir runs/lora
    accelerate launch examples/finetune_lora.py ...        # several GPUs (DDP)

`chats.jsonl` holds one JSON object per line: {"prompt": ..., "response": ...} or {"messages": [...]} (the last
message is the assistant's response). The same run from the command line:
`llada train sft --model ... --data chats.jsonl --lora --merge-lora --output-dir runs/lora`.
"""

import argparse
from pathlib import Path

import torch
from peft import get_peft_model
from transformers import AutoTokenizer

from llada import LLaDAModelLM
from llada.generation_llada import decode_generation
from llada.training import LLaDASFTCollator, LLaDATrainer, LLaDATrainingArguments, llada_lora_config
from llada.training.data import read_records


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = LLaDAModelLM.from_pretrained(args.model, dtype=torch.float32)
    model = get_peft_model(model, llada_lora_config(r=args.lora_r))  # block layers only, never the LM head
    model.print_trainable_parameters()

    config = model.config
    collator = LLaDASFTCollator(
        tokenizer, max_length=args.max_length, eos_token_id=config.eos_token_id, mask_token_id=config.mask_token_id
    )
    training_args = LLaDATrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=4,
        learning_rate=2e-4,
        num_train_epochs=args.epochs,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,  # a float < 1 is a fraction of the run
        logging_steps=10,
        save_steps=200,
        bf16=args.bf16,
        report_to="none",
    )
    trainer = LLaDATrainer(
        model=model,
        args=training_args,
        train_dataset=read_records([args.data]),
        data_collator=collator,
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(args.output_dir)  # the adapters

    if trainer.is_world_process_zero():
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload().eval()
        merged.save_pretrained(Path(args.output_dir) / "merged")
        tokenizer.save_pretrained(Path(args.output_dir) / "merged")
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": "Say something."}], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(merged.device)
        out = merged.generate(ids, max_new_tokens=64, steps=64, block_length=32)
        sequences = getattr(out, "sequences", out)
        # decode_generation stops at the end of the turn (EOS / <|eot_id|>): nothing after it is printed
        print(decode_generation(tokenizer, sequences, prompt_length=ids.shape[1])[0])


if __name__ == "__main__":
    main()
