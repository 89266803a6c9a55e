"""A tiny random BERT checkpoint with a word-level tokenizer, saved to a folder (for the text-path tests)."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ("the a of and to in is was he she it that for on with as his her at by this had not are but from "
         "or have an they which one you were all we there been has when who will more no if out so said what "
         "up its about into than them can only other new some could time these two may then do first any my "
         "now such like our over man me even most made after also did many before must through back years "
         "where much your way well down should because each just those people how too little state good very "
         "make world still own see men work long get here between both life being under never day same "
         "another know while last might us great old year off come since against go came right used take three").split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def sentences(n: int = 60, seed: int = 0) -> list[tuple[str, int]]:
    """Seeded word salads of 4-14 words, labelled 0/1 by which half of the vocabulary they draw from."""
    g = torch.Generator().manual_seed(seed)
    half = len(WORDS) // 2
    out = []
    for k in range(n):
        label = k % 2
        pool = WORDS[:half] if label == 0 else WORDS[half:]
        length = int(torch.randint(4, 15, (1,), generator=g))
        idx = torch.randint(0, len(pool), (length,), generator=g).tolist()
        out.append((" ".join(pool[i] for i in idx), label))
    return out


def tiny_checkpoint(folder: Path, *, seed: int = 0, kind: str = "bert", num_labels: int = 2) -> Path:
    """Save a random 2-layer model (hidden 32, 4 heads, FFN 64) and its tokenizer into ``folder``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {token: i for i, token in enumerate(SPECIAL + list(WORDS))}
    core = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(seed)
    if kind == "gpt2":
        config = GPT2Config(vocab_size=len(SPECIAL) + len(WORDS), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                            n_inner=64, bos_token_id=2, eos_token_id=3, pad_token_id=0)
        model = GPT2LMHeadModel(config)
    else:
        config = BertConfig(vocab_size=len(SPECIAL) + len(WORDS), hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                            num_labels=num_labels)
        model = BertModel(config)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def write_lines(path: Path, n: int = 60, seed: int = 0, *, labelled: bool = False) -> Path:
    """``n`` sentences, one per line; with ``labelled`` a folder of class sub-folders instead."""
    items = sentences(n, seed)
    if not labelled:
        path.write_text("\n".join(t for t, _ in items) + "\n", encoding="utf-8")
        return path
    for label in (0, 1):
        (path / f"class{label}").mkdir(parents=True, exist_ok=True)
        (path / f"class{label}" / "a.txt").write_text("\n".join(t for t, y in items if y == label) + "\n")
    return path
