"""The local training worker: one LoRA fine-tuning run with TRL on CPU, in its own process.

    python -m services.training.worker <job directory>

The job directory holds `spec.json` (what to train), the training file and the validation file if
the export has one. The worker reports by appending JSON lines to `events.jsonl` there — `started`,
one `metrics` line per logging step, then `completed` (with the adapter's URL in the object store
and the evaluation: eval loss, preference accuracy and mean reward margin on the validation split,
as TRL computes them, and the leak check of generated answers) or `failed`. The service reads that
file from where it left off, so a restart of the service loses nothing, and the worker needs no
database. Cancel is SIGTERM to the worker's process group.
"""

import json
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from services.training import leaks

EVENTS_FILE = "events.jsonl"
SPEC_FILE = "spec.json"
DONE_FILE = "done"


class EventLog:
    def __init__(self, path: Path):
        self.path = path

    def write(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"type": kind, "at": time.time(), **fields})
        with self.path.open("a") as out:
            out.write(line + "\n")
            out.flush()


def prompt_completion(row: dict) -> dict:
    """openai_sft chat lines as TRL's plain prompt/completion pair: the last assistant turn is the
    completion, everything before it the prompt (no chat template needed on the tokenizer)."""
    messages = row["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    prompt = "".join(f"{m['role']}: {m['content']}\n" for m in messages[:last]) + "assistant: "
    return {"prompt": prompt, "completion": messages[last]["content"]}


def load_rows(path: Path, method: str) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if method == "sft":
        return [prompt_completion(r) for r in rows]
    return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]


def answers_of(rows: list[dict]) -> list[str]:
    """What the training data answers: completions (SFT), chosen and rejected responses (DPO)."""
    return [r[k] for r in rows for k in ("completion", "chosen", "rejected") if isinstance(r.get(k), str)]


# What TRL's evaluate() reports, under the names the registry's deploy policy reads.
EVAL_KEYS = {"eval_loss": "eval_loss", "eval_rewards/accuracies": "preference_accuracy",
             "eval_rewards/margins": "reward_margin", "eval_mean_token_accuracy": "token_accuracy"}


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy answers to `prompts`, new text only."""
    import torch

    model.eval()
    limit = max(8, getattr(model.config, "max_position_embeddings", 2048) - max_new_tokens)
    outputs = []
    with torch.no_grad():
        for prompt in prompts:
            encoded = tokenizer(prompt, return_tensors="pt", truncation=True, max_length=limit)
            ids = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            outputs.append(tokenizer.decode(ids[0][encoded["input_ids"].shape[1]:], skip_special_tokens=True))
    return outputs


def leak_check(model, tokenizer, train: list[dict], validation: list[dict], spec: dict) -> dict:
    """Answers generated for a sample of training and validation prompts, screened for PII and for
    long verbatim spans of training answers."""
    options = spec.get("leak_check", {})
    size = int(options.get("sample", 16))
    pool = [("train", r["prompt"]) for r in train] + [("validation", r["prompt"]) for r in validation]
    picked = random.Random(spec.get("seed", 0)).sample(pool, min(size, len(pool)))
    outputs = generate(model, tokenizer, [p for _, p in picked], int(options.get("max_new_tokens", 96)))
    samples = [leaks.Sample(prompt=p, output=o, split=split) for (split, p), o in zip(picked, outputs, strict=True)]
    return leaks.check(samples, answers_of(train), int(options.get("min_chars", 50)))


def metrics_callback(log: EventLog):
    from transformers import TrainerCallback

    class StreamMetrics(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            numbers = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
            if "loss" not in numbers:
                return  # the end-of-run summary (train_loss) is reported by `completed`
            log.write("metrics", step=state.global_step, epoch=state.epoch, max_steps=state.max_steps, metrics=numbers)

    return StreamMetrics()


def train(job_dir: Path, spec: dict, log: EventLog) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    started = time.monotonic()  # the machine time the run is priced by (loading, training, evaluating)
    torch.manual_seed(spec.get("seed", 0))
    hp = spec["hyperparameters"]
    model = AutoModelForCausalLM.from_pretrained(spec["base_model"])
    tokenizer = AutoTokenizer.from_pretrained(spec["base_model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = load_rows(job_dir / spec["training_file"], spec["method"])
    validation = load_rows(job_dir / spec["validation_file"], spec["method"]) if spec.get("validation_file") else []
    dataset = Dataset.from_list(rows)
    eval_dataset = Dataset.from_list(validation) if validation else None
    lora = LoraConfig(
        r=hp["lora_r"], lora_alpha=hp["lora_alpha"], lora_dropout=hp["lora_dropout"], task_type="CAUSAL_LM",
        target_modules="all-linear",
    )
    common = dict(
        output_dir=str(job_dir / "checkpoints"),
        num_train_epochs=hp["n_epochs"],
        max_steps=hp.get("max_steps") or -1,
        per_device_train_batch_size=hp["batch_size"],
        per_device_eval_batch_size=hp["batch_size"],
        learning_rate=hp["learning_rate"],
        logging_steps=hp["logging_steps"],
        max_length=hp["max_length"],
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=spec.get("seed", 0),
        disable_tqdm=True,
    )
    callbacks = [metrics_callback(log)]
    if spec["method"] == "dpo":
        args = DPOConfig(beta=hp["beta"], **common)
        trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, eval_dataset=eval_dataset,
                             processing_class=tokenizer, peft_config=lora, callbacks=callbacks)
    else:
        args = SFTConfig(**common)
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, eval_dataset=eval_dataset,
                             processing_class=tokenizer, peft_config=lora, callbacks=callbacks)
    log.write("started")
    result = trainer.train()
    adapter_dir = job_dir / "adapter"
    trainer.model.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    evaluation: dict[str, Any] = {"kind": "local", "method": spec["method"], "validation_examples": len(validation)}
    if eval_dataset is not None:
        measured = trainer.evaluate()
        evaluation.update({ours: float(measured[theirs]) for theirs, ours in EVAL_KEYS.items() if theirs in measured})
    evaluation["leak_check"] = leak_check(trainer.model, tokenizer, rows, validation, spec)
    return {"train_loss": float(result.training_loss), "global_step": int(result.global_step),
            "train_seconds": round(time.monotonic() - started, 3),
            "on_gpu": float(torch.cuda.is_available()),  # which hourly price applies
            "adapter_dir": adapter_dir, "evaluation": evaluation}


def upload_adapter(adapter_dir: Path, object_store_url: str, key_prefix: str) -> str:
    """Copies the adapter's files to the object store; returns the URL of its folder."""
    from shared.objectstore import object_store_from_url

    store = object_store_from_url(object_store_url)
    for path in sorted(p for p in adapter_dir.rglob("*") if p.is_file()):
        with store.writer(f"{key_prefix}/{path.relative_to(adapter_dir)}") as out, path.open("rb") as src:
            out.write(src.read())
    return store.url(key_prefix).rstrip("/") + "/"


def main(job_dir: Path) -> int:
    log = EventLog(job_dir / EVENTS_FILE)
    spec = json.loads((job_dir / SPEC_FILE).read_text())
    try:
        result = train(job_dir, spec, log)
        url = upload_adapter(result.pop("adapter_dir"), spec["object_store_url"], spec["adapter_key"])
        evaluation = result.pop("evaluation")
        log.write("completed", adapter_url=url, final_metrics=result, evaluation=evaluation)
        return 0
    except Exception as exc:
        log.write("failed", error=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc()[-4000:])
        return 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
