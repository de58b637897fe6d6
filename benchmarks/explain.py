"""How fast and how faithful inference/explain.py's word scores are, on this machine, in one run.

    python benchmarks/explain.py --speed                              # full-size random DistilBERT, maxlen 400
    python benchmarks/explain.py --faithfulness --model /work/standin-predictor --n 200

--speed: seconds per review of explain() for each --steps (a first and a second pass over --n real
reviews), without --model with DistilBERT's full shape and random weights at maxlen 400
(benchmarks/inference.py builds it: right for speed, meaningless for faithfulness). Also one forward
pass and one forward + backward pass of one review, so the cost reads as passes.

--faithfulness: the deletion test on --n real test reviews with a trained --model (for real text, the
pretrained stand-in trained as docs/explain.md says). For each review: delete the 5 words explain()
scores highest towards the predicted class, or 5 random words it read (averaged over 3 draws), and
predict again. Reported: the mean fall in the predicted class's probability and the share of labels
that flip, for each --steps, and their ratio (top-5 over random).
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]
REAL_REVIEWS = ROOT.parent / "shared" / "data" / "imdb" / "test.xlsx"
SAMPLE_REVIEWS = ROOT / "data" / "sample" / "test.xlsx"

from imdb_distilbert import compat  # noqa: E402,F401  (before TensorFlow: Keras 2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--speed", action="store_true", help="seconds per review (full-size random model without --model)")
    p.add_argument("--faithfulness", action="store_true", help="the deletion test (needs a trained --model)")
    p.add_argument("--model", type=Path, metavar="DIR",
                   help="a saved predictor (default for --speed: build a full-size random one)")
    p.add_argument("--reviews", type=Path, metavar="PATH", help="test reviews with Reviews and Sentiment columns "
                   "(default: ../shared/data/imdb/test.xlsx when present, else data/sample/test.xlsx)")
    p.add_argument("--n", type=int, default=None, help="reviews (default: 8 for --speed, 200 for --faithfulness)")
    p.add_argument("--steps", default=None, help="comma-separated path steps to compare (default: 1,3,8 for --speed, "
                   "1,2,3,4,8 for --faithfulness)")
    p.add_argument("--reference-steps", type=int, default=16, help="--faithfulness also compares each --steps with "
                   "this many (a close estimate of the exact integral); 0: do not (default: 16)")
    p.add_argument("--maxlen", type=int, default=400, help="maxlen of the model built without --model (default: 400)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed for the review sample and the random deletions (default: 0)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = p.parse_args(argv)
    if not (args.speed or args.faithfulness):
        p.error("choose --speed, --faithfulness or both")
    if args.faithfulness and not args.model:
        p.error("--faithfulness needs a trained --model (a random model's explanations mean nothing)")
    return args


def sample(path, n, seed):
    import pandas as pd

    frame = pd.read_excel(path) if path.suffix == ".xlsx" else pd.read_csv(path)
    frame = frame[frame["Reviews"].fillna("").str.strip() != ""]
    return frame.sample(n=min(n, len(frame)), random_state=seed).reset_index(drop=True)


def speed(args, texts, steps_list):
    """Seconds per review for each number of steps (first pass over the reviews, and a second one once
    TensorFlow has set up its kernels for their lengths), and the cost of one plain forward pass and of
    one forward + backward pass (warm), for reading those as passes."""
    import numpy as np
    import tensorflow as tf

    from imdb_distilbert.data import batching
    from imdb_distilbert.inference import backends, explain

    predictor = backends.KtrainBackend(args.model, batch_size=1).predictor
    tokens = [min(len(predictor.preproc.get_tokenizer().tokenize(t)) + 2, predictor.preproc.maxlen) for t in texts]
    results = {"reviews": len(texts), "mean_tokens": float(np.mean(tokens))}
    for steps in steps_list:
        for run in ("first", "second"):
            started = time.perf_counter()
            explain.explain(predictor, texts, steps=steps)
            results[f"steps_{steps}_{run}_s"] = (time.perf_counter() - started) / len(texts)
        print(f"steps {steps}: {results[f'steps_{steps}_first_s']:.2f} s/review on a first pass, "
              f"{results[f'steps_{steps}_second_s']:.2f} on a second", file=sys.stderr)
    explainer = explain.Explainer(predictor, steps=1)
    padded = []
    for text in texts:  # as explain() pads them
        ids = explainer.encode(text, "head")[0]
        width = batching.explain_width(len(ids), predictor.preproc.maxlen, explain.BUCKET)
        padded.append((tf.constant([ids + [0] * (width - len(ids))]),
                       tf.constant([[1] * len(ids) + [0] * (width - len(ids))])))
    def forward(ids, mask):
        predictor.model({"input_ids": ids, "attention_mask": mask}, training=False)

    def forward_backward(ids, mask):
        embeds = tf.gather(explainer.embeddings, ids)
        with tf.GradientTape() as tape:
            tape.watch(embeds)
            margin = predictor.model({"inputs_embeds": embeds, "attention_mask": mask}, training=False).logits[:, 0]
        tape.gradient(margin, embeds).numpy()

    for name, step in (("forward_s", forward), ("forward_backward_s", forward_backward)):
        for _ in range(2):  # the second time, with TensorFlow's kernels set up for these lengths
            started = time.perf_counter()
            for ids, mask in padded:
                step(ids, mask)
        results[name] = (time.perf_counter() - started) / len(texts)
    return results


def delete(text, spans):
    """`text` without the (start, end) spans, and without the doubled spaces that leaves."""
    out, at = [], 0
    for start, end in sorted(spans):
        out.append(text[at:start])
        at = end
    return " ".join("".join(out + [text[at:]]).split())


def faithfulness(args, frame, steps_list, k=5, draws=3):
    import numpy as np

    from imdb_distilbert.data import truncation
    from imdb_distilbert.inference import backends, explain

    model = backends.KtrainBackend(args.model)
    texts = list(frame["Reviews"])
    results = {"reviews": len(texts), "k": k, "random_draws": draws,
               "accuracy": float(np.mean(np.array(model.predict_proba(texts)).argmax(1)
                                         == [model.classes.index(t) for t in frame["Sentiment"]]))}
    cut = truncation.saved_settings(args.model)[1]
    reference = (explain.explain(model.predictor, texts, steps=args.reference_steps, cut=cut)
                 if args.reference_steps else None)
    for steps in steps_list:
        started = time.perf_counter()
        found = explain.explain(model.predictor, texts, steps=steps, cut=cut)
        seconds = (time.perf_counter() - started) / len(texts)
        top, random = [], [[] for _ in range(draws)]
        rng = np.random.default_rng(args.seed)  # the same random words for every --steps
        for f in found:
            by_score = sorted(f["words"], key=lambda w: -w["scores"][f["label"]])
            top.append(delete(f["text"], [(w["start"], w["end"]) for w in by_score[:k]]))
            for d in range(draws):
                chosen = rng.choice(len(f["words"]), size=min(k, len(f["words"])), replace=False)
                random[d].append(delete(f["text"], [(f["words"][i]["start"], f["words"][i]["end"]) for i in chosen]))
        label = np.array([model.classes.index(f["label"]) for f in found])
        before = np.array([f["probabilities"][f["label"]] for f in found])
        rows = np.arange(len(found))

        def fall(deleted, before=before, rows=rows, label=label):  # this step's values (it is called in this step)
            proba = model.predict_proba(deleted)
            return before - proba[rows, label], proba.argmax(1) != label

        top_fall, top_flip = fall(top)
        random_falls = [fall(r) for r in random]
        random_fall = np.mean([f for f, _ in random_falls], axis=0)
        random_flip = np.mean([flip.mean() for _, flip in random_falls])
        results[f"steps_{steps}"] = {
            "top_fall": float(top_fall.mean()), "random_fall": float(random_fall.mean()),
            "ratio": float(top_fall.mean() / random_fall.mean()) if random_fall.mean() > 0 else None,
            "top_flips": float(top_flip.mean()), "random_flips": float(random_flip), "seconds_per_review": seconds,
        }
        if reference:
            results[f"steps_{steps}"].update(against_reference(found, reference, k))
        print(f"steps {steps}: {json.dumps(results[f'steps_{steps}'])}", file=sys.stderr)
    return results


def against_reference(found, reference, k):
    """How close `found` is to the `reference` explanations (many more steps): the share of the reference's
    top-k words (by size of score) whose score has the same sign, and the mean share of the top-k words
    towards the predicted class that both rank there."""
    same_sign, overlap = [], []
    for f, r in zip(found, reference, strict=True):
        label = r["label"]
        biggest = sorted(range(len(r["words"])), key=lambda i: -abs(r["words"][i]["scores"][label]))[:k]
        same_sign += [(f["words"][i]["scores"][label] > 0) == (r["words"][i]["scores"][label] > 0) for i in biggest]
        tops = [set(sorted(range(len(x["words"])), key=lambda i: -x["words"][i]["scores"][label])[:k]) for x in (f, r)]
        overlap.append(len(tops[0] & tops[1]) / len(tops[1]))
    return {"same_sign_as_reference": float(sum(same_sign) / len(same_sign)),
            "top_k_shared_with_reference": float(sum(overlap) / len(overlap))}


def main(argv=None):
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    from importlib import metadata

    source = args.reviews or (REAL_REVIEWS if REAL_REVIEWS.is_file() else SAMPLE_REVIEWS)
    report = {"machine": f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), load average before "
              f"{load_before:.2f}; tensorflow {metadata.version('tensorflow')}", "reviews_from": str(source)}
    lines = []
    if args.faithfulness:
        steps_list = [int(s) for s in (args.steps or "1,2,3,4,8").split(",")]
        frame = sample(source, args.n or 200, args.seed)
        result = faithfulness(args, frame, steps_list)
        report["faithfulness"] = {"model": str(args.model), **result}
        lines += [f"Deletion test: {result['reviews']} reviews from {source.name}, model {args.model} "
                  f"(accuracy on them {result['accuracy']:.3f}); fall in the predicted class's probability "
                  f"after deleting {result['k']} words", "",
                  "| steps | top-5 words: mean fall | random 5: mean fall | ratio | top-5: labels flipped "
                  "| random 5: flipped | s/review "
                  f"| sign as with {args.reference_steps} steps (top 5) "
                  f"| top 5 shared with {args.reference_steps} steps |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for steps in steps_list:
            r = result[f"steps_{steps}"]
            ratio = f"{r['ratio']:.1f}x" if r["ratio"] else "-"
            lines.append(f"| {steps} | {r['top_fall']:.3f} | {r['random_fall']:.3f} | {ratio} | {r['top_flips']:.1%} "
                         f"| {r['random_flips']:.1%} | {r['seconds_per_review']:.3f} "
                         f"| {r.get('same_sign_as_reference', float('nan')):.1%} "
                         f"| {r.get('top_k_shared_with_reference', float('nan')):.1%} |")
        lines.append("")
    if args.speed:
        steps_list = [int(s) for s in (args.steps or "1,3,8").split(",")]
        if args.model is None:
            import inference

            from imdb_distilbert.inference import predict

            args.model = Path(tempfile.mkdtemp(prefix="bench-explain-")) / "distilbert-full-size-random"
            print(f"building a full-size random-weight DistilBERT predictor (maxlen {args.maxlen})...", file=sys.stderr)
            inference.build_random_predictor(args.model, args.maxlen,
                                             inference.common_words(predict.read_texts(source)))
        texts = list(sample(source, args.n or 8, args.seed)["Reviews"])
        result = speed(args, texts, steps_list)
        report["speed"] = {"model": str(args.model), **result}
        lines += [f"Speed: {result['reviews']} reviews from {source.name} (mean {result['mean_tokens']:.0f} tokens "
                  f"after the cut), model {args.model.name}, batched as explain() batches them", "",
                  f"- one forward pass (one review, second time): {result['forward_s']:.2f} s/review; "
                  f"one forward + backward pass: {result['forward_backward_s']:.2f} s/review"]
        for steps in steps_list:
            first, second = result[f"steps_{steps}_first_s"], result[f"steps_{steps}_second_s"]
            lines.append(f"- explain, {steps} steps: {first:.2f} s/review on a first pass, {second:.2f} on a second "
                         f"({second / result['forward_backward_s']:.1f} forward + backward passes)")
    print(report["machine"] + "\n\n" + "\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
