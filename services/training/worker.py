"""The local training worker: one LoRA fine-tuning run with TRL on CPU, in its own process.

    python -m services.training.worker <job directory>

The job directory holds `spec.json` (what to train) and the training file. The worker reports by
appending JSON lines to `events.jsonl` there — `started`, one `metrics` line per logging step,
then `completed` (with the adapter's URL in the object store) or `failed`. The service reads that
file from where it left off, so a restart of the service loses nothing, and the worker needs no
database. Cancel is SIGTERM to the worker's process group.
"""

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

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

    torch.manual_seed(spec.get("seed", 0))
    hp = spec["hyperparameters"]
    model = AutoModelForCausalLM.from_pretrained(spec["base_model"])
    tokenizer = AutoTokenizer.from_pretrained(spec["base_model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset = Dataset.from_list(load_rows(job_dir / spec["training_file"], spec["method"]))
    lora = LoraConfig(
        r=hp["lora_r"], lora_alpha=hp["lora_alpha"], lora_dropout=hp["lora_dropout"], task_type="CAUSAL_LM",
        target_modules="all-linear",
    )
    common = dict(
        output_dir=str(job_dir / "checkpoints"),
        num_train_epochs=hp["n_epochs"],
        max_steps=hp.get("max_steps") or -1,
        per_device_train_batch_size=hp["batch_size"],
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
        trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=lora, callbacks=callbacks)
    else:
        args = SFTConfig(**common)
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=lora, callbacks=callbacks)
    log.write("started")
    result = trainer.train()
    adapter_dir = job_dir / "adapter"
    trainer.model.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    return {"train_loss": float(result.training_loss), "global_step": int(result.global_step),
            "adapter_dir": adapter_dir}


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
        log.write("completed", adapter_url=url, final_metrics=result)
        return 0
    except Exception as exc:
        log.write("failed", error=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc()[-4000:])
        return 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
