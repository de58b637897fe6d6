"""Build a tiny DistilBERT with random weights and install it in a Hugging Face cache.

This machine (and CI) cannot reach the Hugging Face Hub, so the tests make their own
`distilbert-base-uncased`: the same files the Hub serves (config.json, vocab.txt, tokenizer
files and a PyTorch-format `model.safetensors`), laid out in `HF_HOME/hub` exactly as a real
download would be. With `HF_HOME` pointing there and `HF_HUB_OFFLINE=1`,
`from_pretrained('distilbert-base-uncased')` loads it through the normal code path.

Run as a script to install one by hand for a smoke run:

    python tests/tiny_distilbert.py /tmp/hf [--full-size]   # then: export HF_HOME=/tmp/hf HF_HUB_OFFLINE=1
"""

import json
import os
from pathlib import Path

MODEL_ID = "distilbert-base-uncased"
COMMIT = "0" * 39 + "1"  # any 40-hex revision; refs/main points at it

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'\"-()/:;<>")

# Words that the synthetic reviews use plus common English words, so that both the tests'
# reviews and real IMDB reviews tokenize mostly into whole words rather than characters.
WORDS = """
the a an and or but of to in on at for with from by as is was were be been are it this that
these those i you he she we they my your his her our their me him them not no never very really
so too just also only all some any more most much many few one two three first last new old good
bad great awful terrible wonderful excellent brilliant boring dull superb horrible fantastic
amazing poor weak worst best loved hated enjoyed liked love hate waste beautiful masterpiece
mess stupid fun funny sad movie film films movies story plot acting actor actors actress cast
director script scene scenes character characters ending end music time watch watched watching
see seen saw again must everyone someone people man woman life world year years way thing things
make made makes get got go going think thought know like would could should will can did do
does have has had what who when where why how there here then than out up down about into over
after before while because if which br even still well back little big long short real nothing
something anything every other another same such own both each few lot bit quite pretty rather
""".split()


def vocabulary(extra_words=()):
    words = list(dict.fromkeys(WORDS + [w.lower() for w in extra_words]))
    return SPECIAL + CHARS + ["##" + c for c in CHARS] + [w for w in words if w not in CHARS]


def install(hf_home, extra_words=(), dim=64, n_layers=2, n_heads=2, hidden_dim=128, seed=0, vocab_size=None):
    """Write a random-weight DistilBERT into HF_HOME's hub cache as `distilbert-base-uncased`.

    `vocab_size` larger than the vocabulary pads the embedding matrix (30522 is the real model's), for timing.
    """
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import numpy as np
    import tensorflow as tf
    from safetensors.numpy import save_file
    from transformers import DistilBertConfig, DistilBertTokenizerFast, TFDistilBertModel
    from transformers.modeling_tf_pytorch_utils import (
        TransposeType,
        convert_tf_weight_name_to_pt_weight_name,
    )

    repo = Path(hf_home) / "hub" / ("models--" + MODEL_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)

    vocab = vocabulary(extra_words)
    (snapshot / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = DistilBertTokenizerFast(vocab_file=str(snapshot / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(snapshot)

    config = DistilBertConfig(
        vocab_size=max(len(vocab), vocab_size or 0), dim=dim, n_layers=n_layers, n_heads=n_heads,
        hidden_dim=hidden_dim, max_position_embeddings=512,
        architectures=["DistilBertForMaskedLM"],
    )
    config.save_pretrained(snapshot)

    # The Hub's checkpoint is PyTorch-format safetensors; write the same, converting the TF
    # variable names and layouts the way transformers' own TF<->PT bridge does.
    tf.keras.utils.set_random_seed(seed)
    model = TFDistilBertModel(config)
    model(model.dummy_inputs)
    tensors = {}
    for weight in model.weights:
        name, transpose = convert_tf_weight_name_to_pt_weight_name(
            weight.name, tf_weight_shape=weight.shape
        )
        array = weight.numpy()
        if transpose is TransposeType.SIMPLE:
            array = array.T
        tensors[name] = np.ascontiguousarray(array, dtype=np.float32)
    save_file(tensors, str(snapshot / "model.safetensors"), metadata={"format": "pt"})
    return snapshot


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Install a random-weight DistilBERT as distilbert-base-uncased.")
    parser.add_argument("hf_home", help="the folder to use as HF_HOME")
    parser.add_argument("--full-size", action="store_true",
                        help="DistilBERT's real shape (768 wide, 6 layers, 12 heads), for timing and memory")
    args = parser.parse_args()
    size = dict(dim=768, n_layers=6, n_heads=12, hidden_dim=3072) if args.full_size else {}
    print(json.dumps({"installed": str(install(args.hf_home, **size))}))
