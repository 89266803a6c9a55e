"""A small LLaMA-style causal LM trained on Brown for a few minutes: the subject of llm_oneshot.py.

Everything is built offline: a byte-level BPE tokenizer trained on the training texts (the
``tokenizers`` library), a ``LlamaConfig`` model (about 1.1M parameters) and a short AdamW run.
Every 10th Brown text is held out for perplexity; calibration windows come from the training
texts, as the papers calibrate on training data. The checkpoint is cached (safetensors) under
``benchmarks/.cache/`` (gitignored) keyed by the settings, so reruns skip the training.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

CACHE = Path(__file__).resolve().parent / ".cache"


@dataclass(frozen=True)
class TinyLMSettings:
    vocab: int = 2048
    hidden: int = 128
    intermediate: int = 384
    layers: int = 4
    heads: int = 4
    seq_len: int = 128
    batch: int = 16
    steps: int = 600
    lr: float = 3e-3
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def brown_split() -> tuple[list[str], list[str]]:
    """Training and held-out documents (every 10th text held out), one string per text."""
    from prunekit.data.brown import load_texts

    texts = load_texts()
    docs = [" ".join(t.sentences) for t in texts]
    return [d for i, d in enumerate(docs) if i % 10], [d for i, d in enumerate(docs) if i % 10 == 0]


def train_tokenizer(docs: list[str], vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer=trainer)
    return tok


def encode(tok, docs: list[str]) -> torch.Tensor:
    """All documents as one 1-D stream, each followed by ``<eos>``."""
    eos = tok.token_to_id("<eos>")
    ids: list[int] = []
    for enc in tok.encode_batch(docs):
        ids.extend(enc.ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def build_model(s: TinyLMSettings):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=s.vocab, hidden_size=s.hidden, intermediate_size=s.intermediate,
                         num_hidden_layers=s.layers, num_attention_heads=s.heads, num_key_value_heads=s.heads,
                         max_position_embeddings=2 * s.seq_len, tie_word_embeddings=True)
    config._attn_implementation = "eager"
    return LlamaForCausalLM(config)


def _train(model, stream: torch.Tensor, s: TinyLMSettings, log) -> float:
    g = torch.Generator().manual_seed(s.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=0.1, betas=(0.9, 0.95))
    model.train()
    loss_ema = None
    for step in range(s.steps):
        lr = s.lr * min(1.0, (step + 1) / 30) * 0.5 * (1 + math.cos(math.pi * step / s.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, stream.numel() - s.seq_len - 1, (s.batch,), generator=g)
        ids = torch.stack([stream[i:i + s.seq_len] for i in starts.tolist()])
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_ema = float(loss.detach()) if loss_ema is None else 0.95 * loss_ema + 0.05 * float(loss.detach())
        if step % 100 == 0 or step == s.steps - 1:
            log(f"  step {step:4d}  loss {loss_ema:.3f}")
    model.eval()
    return loss_ema


def load_or_train(s: TinyLMSettings = TinyLMSettings(), *, log=print):
    """``(model, tokenizer, train_stream, test_stream, info)``; trains and caches on first use."""
    from safetensors.torch import load_file, save_file
    from tokenizers import Tokenizer

    torch.manual_seed(s.seed)
    folder = CACHE / f"tiny-lm-{s.key()}"
    if (folder / "model.safetensors").is_file():
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        model = build_model(s)
        missing, unexpected = model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
        if unexpected or set(missing) - {"lm_head.weight"}:
            raise RuntimeError(f"cached tiny LM in {folder} does not match the settings; delete the folder")
        model.tie_weights()
        info = json.loads((folder / "info.json").read_text())
        streams_file = folder / "streams.safetensors"
        if not streams_file.is_file():
            train_docs, test_docs = brown_split()
            save_file({"train": encode(tok, train_docs), "test": encode(tok, test_docs)}, str(streams_file))
        streams = load_file(str(streams_file))
        return model.eval(), tok, streams["train"], streams["test"], info
    train_docs, test_docs = brown_split()
    log(f"training the tiny LM ({s}) into {folder} ...")
    tok = train_tokenizer(train_docs, s.vocab)
    train_stream, test_stream = encode(tok, train_docs), encode(tok, test_docs)
    model = build_model(s)
    started = time.perf_counter()
    final_loss = _train(model, train_stream, s, log)
    from prunekit.evaluation.perplexity import perplexity

    info = {"settings": asdict(s), "test_perplexity": round(perplexity(model, test_stream, seq_len=s.seq_len), 3),
            "train_seconds": round(time.perf_counter() - started, 1),
            "final_train_loss": round(final_loss, 4), "params": sum(p.numel() for p in model.parameters()),
            "train_tokens": int(train_stream.numel()), "test_tokens": int(test_stream.numel())}
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".model.safetensors.tmp"
    tok.save(str(folder / "tokenizer.json"))
    (folder / "info.json").write_text(json.dumps(info, indent=1))
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(tmp))
    tmp.replace(folder / "model.safetensors")  # written last: its presence means the cache is complete
    return model, tok, train_stream, test_stream, info
