"""What cutting the head's groups again saves on the entity probabilities, in one run.

    python scripts/bench_buckets.py MODEL CORPUS [--batch-size 64] [--rounds 5] [--step-costs 0 4 16 64 inf]
        [--threads 1] [--json PATH]

The pipeline MODEL reads the corpus texts (re-tokenized, in corpus order, batches
of --batch-size docs, as `spacy benchmark speed` feeds them); each batch is cut
into the length groups the head runs on (buckets.STEP_COST_CPU, as
architectures.py does), and per group its crf_ner component's emissions and
Viterbi paths are computed once. Then, for each step cost (the price of one
forward-backward step in padded positions; inf = no further cut, what the head
did before CONFIDENCE_STEP_COST_CPU), the head's entity-probability step
(forward-backward, the paths' entity probabilities, the candidates) runs over
every group; the step costs alternate within each round so all see the same
machine load. Prints the minimum time per pass over the rounds, the padded
positions and groups, and the speed-up over no further cut; every cut is
checked to give the same entities and probabilities.
"""
import argparse
import json
import os
import platform
import time
from pathlib import Path

from conll_crf.threads import pin_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--step-costs", type=float, nargs="+", default=[0.0, 4.0, 16.0, 64.0, float("inf")])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    pin_threads(args.threads)  # before numpy and spaCy load: BLAS reads its thread count once
    import spacy
    import torch
    from spacy.tokens import DocBin

    from conll_crf.buckets import CONFIDENCE_STEP_COST_CPU, STEP_COST_CPU, length_groups
    from conll_crf.layers import torch_module

    nlp = spacy.load(args.model)
    comp = nlp.get_pipe("crf_ner")
    module = torch_module(comp.model.get_ref("output_layer"))
    threshold, temperature = float(comp.candidate_threshold), float(comp.cfg.get("temperature", 1.0))
    texts = [doc.text for doc in DocBin().from_disk(args.corpus).get_docs(nlp.vocab)]
    before = nlp.pipe_names[: nlp.pipe_names.index("crf_ner")]
    batches = []  # the head's groups: (emissions, mask, lengths, paths)
    for i in range(0, len(texts), args.batch_size):
        docs = list(nlp.pipe(texts[i : i + args.batch_size], disable=[n for n in nlp.pipe_names if n not in before]))
        ems = comp.emissions(docs)
        for group in length_groups([len(e) for e in ems], STEP_COST_CPU):
            lengths = torch.tensor([len(ems[j]) for j in group])
            em = torch.zeros(len(group), int(lengths.max()), len(comp.tags))
            for row, j in enumerate(group):
                em[row, : len(ems[j])] = torch.from_numpy(ems[j])
            mask = torch.arange(em.size(1)).unsqueeze(0) < lengths.unsqueeze(1)
            batches.append((em, mask, lengths, module.crf.viterbi(em, mask)[1]))

    def run(step_cost):
        return [module._entity_confidence(em, mask, lengths, paths, threshold, temperature, step_cost) for em, mask, lengths, paths in batches]

    names = [str(c) for c in args.step_costs]
    times = {name: [] for name in names}
    reference = run(float("inf"))
    for r in range(args.rounds):
        for name, step_cost in zip(names, args.step_costs):
            t0 = time.perf_counter()
            got = run(step_cost)
            times[name].append(time.perf_counter() - t0)
            if r == 0:
                for a, b in zip(got, reference):
                    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2]), f"step cost {step_cost}: other entities"
                    torch.testing.assert_close(a[1], b[1], rtol=1e-9, atol=1e-12)
                    torch.testing.assert_close(a[3], b[3], rtol=1e-9, atol=1e-12)
    n_words = sum(int(b[2].sum()) for b in batches)
    base = min(times["inf"]) if "inf" in times else None
    rows = []
    for name, step_cost in zip(names, args.step_costs):
        groups = [length_groups(b[2].tolist(), step_cost) for b in batches]
        padded = sum(int(b[2][grp].max()) * len(grp) for gs, b in zip(groups, batches) for grp in gs)
        best = min(times[name])
        row = {"step_cost": name, "seconds": best, "words_per_second": n_words / best, "groups": sum(map(len, groups)), "padded_positions": padded}
        if base:
            row["speedup_over_no_further_cut"] = base / best
        rows.append(row)
        extra = f", {base / best:.2f}x no further cut" if base else ""
        print(f"step cost {name:>5}: {best * 1e3:8.1f} ms per pass ({n_words / best:,.0f} words/s), {row['groups']} groups, {padded:,} padded positions{extra}")
    print(f"batches of {args.batch_size} docs cut into {len(batches)} head groups (step cost {STEP_COST_CPU}), {n_words:,} tokens; "
          f"the head cuts them again at step cost {CONFIDENCE_STEP_COST_CPU} on CPU")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {
            "model": args.model, "corpus": str(args.corpus), "batch_size": args.batch_size, "threads": args.threads,
            "rounds": args.rounds, "tokens": n_words, "head_step_cost": STEP_COST_CPU, "confidence_step_cost": CONFIDENCE_STEP_COST_CPU, "rows": rows,
            "machine": f"{platform.machine()}, python {platform.python_version()}",
        }
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
