"""A tiny causal LM made on the spot: a Llama config with a few thousand parameters and a BPE
tokenizer trained on the test's own sentences, saved and loaded back with from_pretrained.
Nothing is downloaded."""

import os
import uuid
from pathlib import Path

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def model_dir(name: str) -> Path:
    """A new directory for a test's model under the models directory (RLHF_MODELS_DIR, set for the run by
    tests/conftest.py): the only place a local run takes a base model from, besides the Hugging Face cache."""
    return Path(os.environ["RLHF_MODELS_DIR"]) / f"{name}-{uuid.uuid4().hex[:8]}"


def make_tiny_llama(directory: Path, texts: list[str]) -> Path:
    """Writes a tiny Llama and its tokenizer to `directory`; returns it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory
