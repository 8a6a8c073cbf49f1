"""The canary count's report (``detection_count.py --canaries SHARE``): development and held-out
halves of the same cells, each run with a share of planted flips (cdr_fast/detection/canaries.py).

Every measure is over the judged examples (the canaries are never flagged nor scored as suspects).
Choices made on the development half (seed 1): the count's score, reading and threshold, and the
cleaned copy's relabel rule. The held-out half (the seed ``detection_count.py`` names, before any choice) is read once, by the tables
that follow the choices.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from cdr_fast.detection.canaries import canary_ratio
from cdr_fast.detection.count import (CANARY_QUANTILE, CANARY_READING, canary_noise_rate, names_the_class,
                                      relabel_confidently)
from cdr_fast.detection.scores import learned_overlap, unexplained_loss
from benchmark_cells import goal_and_error, key_of, mean, shown, write_cells, write_readme

# The count's candidates: the canary ratio of the unexplained loss (the library's: the one-way
# overlap taken out), of the unexplained loss with the whole overlap taken out (the pattern-aware
# count before it) and of small loss (the first canary count's), on each reading at each threshold
# (the canaries' score reached by a share q of them); confident learning's rule calibrated by the
# canaries' recall, and confident learning alone, for comparison.
QUANTILES = (0.5, 0.6, 0.7, 0.8, 0.9)
READINGS = ("probs_mean", "probs_ema")
COUNTS = {f"unexplained_{reading}_{q:g}": (lambda e, reading=reading, q=q: canary_noise_rate(e, reading, q))
          for reading in READINGS for q in QUANTILES}
COUNTS.update({f"mutual_{reading}_{q:g}": (lambda e, reading=reading, q=q: whole_overlap_rate(e, reading, q))
               for reading in READINGS for q in QUANTILES})
COUNTS.update({f"small_loss_{reading}_{q:g}": (lambda e, reading=reading, q=q: small_loss_canary_rate(e, reading, q))
               for reading in READINGS for q in QUANTILES})
COUNTS["canary_confident"] = lambda e: canary_confident_rate(e)
LIBRARY = f"unexplained_{CANARY_READING}_{CANARY_QUANTILE:g}"
BEFORE = f"small_loss_{CANARY_READING}_{CANARY_QUANTILE:g}"  # the first canary count, for comparison
PREVIOUS = f"mutual_{CANARY_READING}_{CANARY_QUANTILE:g}"  # the count the library had before the one-way overlap

# The cleaned copy's relabel rules, at the library's count: the library's (relabel_confidently);
# the rule before it (names_the_class alone); and the given label's fit against the canaries'
# with no allowance for a learned flip pattern.
RULES = {"names_and_fit": relabel_confidently,
         "names_the_class": names_the_class,
         "names_and_raw_fit": lambda e, s: names_the_class(e, s) & raw_fit_like_a_canary(e)}
CHOSEN_RULE, BEFORE_RULE = "names_and_fit", "names_the_class"


def raw_fit_like_a_canary(evidence) -> np.ndarray:
    """``fitted_like_a_canary`` without its allowance for a one-way learned pattern."""
    p, y, can = evidence.probs_mean, evidence.given_label, evidence.canary
    rows = np.arange(y.size)
    return p[rows, y] <= np.median(p[rows[can], evidence.trained_label[can]])


def whole_overlap_rate(evidence, reading: str, quantile: float) -> float:
    """The pattern-aware count before the one-way overlap: the canary ratio of the unexplained loss
    with the whole learned overlap taken out, look-alike classes' mutual part included."""
    y, trained = evidence.trained_label, evidence.trained
    probs = getattr(evidence, reading)
    score = unexplained_loss(probs, y, learned_overlap(probs[trained], y[trained]))
    return canary_ratio(score[evidence.canary], score[trained & ~evidence.canary], quantile)


def small_loss_canary_rate(evidence, reading: str, quantile: float) -> float:
    """The first canary count: the canary ratio of small loss, ``1 - p[label]``, unexplained by nothing."""
    y = evidence.trained_label
    score = 1.0 - getattr(evidence, reading)[np.arange(y.size), y].astype(np.float64)
    return canary_ratio(score[evidence.canary], score[evidence.trained & ~evidence.canary], quantile)


def canary_confident_rate(evidence) -> float:
    """(share of the other trained examples the confident joint puts off their label) / (share of
    the canaries it puts there): confident learning's rule, its recall measured on the canaries."""
    from cdr_fast.detection.confident import confident_joint, per_class_thresholds

    can, pool = evidence.canary, evidence.trained & evidence.judged
    p, y, trained = evidence.probs_mean, evidence.trained_label, evidence.trained
    _, confident = confident_joint(p, y, per_class_thresholds(p[trained], y[trained]))
    off = (confident >= 0) & (confident != y)
    return float(min(off[pool].mean() / off[can].mean(), 1.0)) if off[can].any() else 1.0


CL = "confident_learning"


def within(flagged: int, truly: int, n: int) -> bool:
    return abs(flagged - truly) <= 0.15 * truly + 0.002 * n


def measure(folder: Path) -> list[dict]:
    """One canary run: each candidate count (and confident learning's, for comparison), our
    detector's and the baselines' AP (at their development readings of the canary-free grid), and
    the confident-relabel cleaned copy at each count."""
    from cdr_fast.detection import BEST, DETECTORS, average_precision, rank_suspects
    from cdr_fast.detection.count import confident_learning_rate

    e = load_benchmark_evidence(folder)
    j = e.judged
    wrong = (e.given_label != e.clean_label) & j
    n, truly = int(j.sum()), int(wrong.sum())
    rates = {name: count(e) for name, count in COUNTS.items()}
    rates[CL] = confident_learning_rate(e)
    rows = [{"measure": "count", "detector": name, "value": round(n * rate), "truly_wrong": truly,
             "within_goal": int(within(round(n * rate), truly, n))} for name, rate in rates.items()]
    mean_reading = dataclasses.replace(e, probs=e.probs_mean, probs_ema=e.probs_mean)
    for name, evidence in ((BEST, e), ("small_loss", mean_reading), ("confident_learning", mean_reading)):
        score = DETECTORS[name].suspects(evidence).score
        rows.append({"measure": "ap", "detector": name, "value": round(average_precision(score[j], wrong[j]), 6)})
    best = DETECTORS[BEST].suspects(e)

    def clean(measure, name, ranking, sure):
        sure = ranking.flagged & sure
        introduced = int((sure & ~wrong).sum())
        removed = int((sure & wrong & (ranking.suggested == e.clean_label)).sum())
        return {"measure": measure, "detector": name, "value": removed, "introduced": introduced,
                "reviewed": int((ranking.flagged & ~sure).sum()), "within_goal": int(introduced <= removed / 10),
                "introduced_at": e.index[sure & ~wrong].tolist()}  # the report's tally of images, not in cells.csv

    for name, rate in rates.items():
        ranking = rank_suspects(best, rate, j)
        rows.append(clean("clean", name, ranking, relabel_confidently(e, ranking.suggested)))
    ranking = rank_suspects(best, rates[LIBRARY], j)
    rows += [clean("clean_rule", name, ranking, rule(e, ranking.suggested)) for name, rule in RULES.items()]
    return rows


def report(out: Path, share: float, canary_free: Path, held_out: int) -> str:
    rows = []
    for summary in sorted((out / "runs").glob("*/summary.json")):
        rows += [{**key_of(summary.parent.name), **r} for r in measure(summary.parent)]
    write_cells(out, rows, [])
    dev = [r for r in rows if r["seed"] == 1]
    held = [r for r in rows if r["seed"] == held_out]

    def count_score(rs, name):
        counts = [r for r in rs if r["measure"] == "count" and r["detector"] == name]
        return (*goal_and_error(counts), len(counts))

    lines = ["# The canary count: development and held-out halves", "",
             f"Command: `python scripts/detection_count.py --out {shown(out)} --workers 2 --canaries "
             f"{share:g}`: the cells of results/detection-count, each run with {share:.0%} of its training split "
             "planted with a wrong label drawn from the other classes. Every number is over the judged examples "
             "(all but the canaries).", "", "## Choices made on the development half (seed 1)", ""]
    if dev:
        chosen = max(COUNTS, key=lambda name: count_score(dev, name)[:2])
        for name in (*COUNTS, CL):
            k, err, cells = count_score(dev, name)
            lines.append(f"- count `{name}`: {k} of {cells} cells within the goal, mean relative error {-err:.3f}")
        lines += [f"- **chosen: `{chosen}`**", ""]
        if chosen != LIBRARY:
            lines += [f"**The library counts by `{LIBRARY}`, not the development half's choice: set CANARY_READING "
                      "and CANARY_QUANTILE in cdr_fast/detection/count.py. The tables below are the library's.**", ""]
        lines += relabel_rules(dev)
        lines += canary_cost(dev, canary_free)
    else:
        lines += ["No development runs in this folder: the tables below are the library's choices, made on the "
                  "development half of results/detection-canaries.", ""]
    lines += ["", f"## Held-out half (seed {held_out}), reported once", ""]
    chosen = LIBRARY  # what the library counts by: the held-out half judges it, whatever this folder's runs chose

    cells = defaultdict(dict)
    for r in held:
        k = (r["dataset"], r["kind"], r["rate"], r["method"])
        if r["measure"] in ("count", "clean") and r["detector"] in (chosen, CL, BEFORE, PREVIOUS):
            cells[k][(r["measure"], r["detector"])] = r
        elif r["measure"] == "clean_rule":
            cells[k][(r["measure"], r["detector"])] = r
        elif r["measure"] == "ap":
            cells[k][r["detector"]] = r["value"]
    from cdr_fast.detection import BEST
    head = ["dataset", "noise", "rate", "method", "truly wrong", "flagged", "count within goal", "count before",
            "small-loss count",
            "CL count",
            "AP ours", "AP small loss", "AP conf. learning", "relabelled right", "introduced", "reviewed",
            "clean within goal"]
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    totals = defaultdict(int)
    by_rate = defaultdict(lambda: [0, 0])
    for k in sorted(cells):
        c = cells[k]
        count, clean, cl = c[("count", chosen)], c[("clean", chosen)], c[("count", CL)]
        before = c[("count", BEFORE)]
        totals["cells"] += 1
        totals["previous"] += c[("count", PREVIOUS)]["within_goal"]
        totals["previous clean"] += c[("clean", PREVIOUS)]["within_goal"]
        totals["over"] += count["value"] > 2 * count["truly_wrong"]
        totals["under"] += count["value"] < count["truly_wrong"] / 2
        totals["previous over"] += c[("count", PREVIOUS)]["value"] > 2 * count["truly_wrong"]
        totals["previous under"] += c[("count", PREVIOUS)]["value"] < count["truly_wrong"] / 2
        totals["count"] += count["within_goal"]
        totals["before"] += before["within_goal"]
        totals["cl"] += cl["within_goal"]
        totals["clean"] += clean["within_goal"]
        totals["clean_before"] += c[("clean_rule", BEFORE_RULE)]["within_goal"]
        totals[f"{k[0]} cells"] += 1
        totals[f"{k[0]} clean"] += clean["within_goal"]
        totals[f"{k[0]} removed"] += clean["value"]
        totals[f"{k[0]} introduced"] += clean["introduced"]
        totals[f"{k[0]} removed before"] += c[("clean_rule", BEFORE_RULE)]["value"]
        totals[f"{k[0]} introduced before"] += c[("clean_rule", BEFORE_RULE)]["introduced"]
        totals["ahead"] += c[BEST] > max(c["small_loss"], c["confident_learning"])
        totals["level"] += c[BEST] >= max(c["small_loss"], c["confident_learning"])
        by_rate[k[2]][0] += count["within_goal"]
        by_rate[k[2]][1] += 1
        table.append(f"| {k[0]} | {k[1]} | {k[2]:.0%} | {k[3]} | {count['truly_wrong']} | {count['value']} | "
                     f"{'yes' if count['within_goal'] else 'no'} | {c[('count', PREVIOUS)]['value']} | "
                     f"{before['value']} | {cl['value']} | {c[BEST]:.4f} | "
                     f"{c['small_loss']:.4f} | {c['confident_learning']:.4f} | {clean['value']} | "
                     f"{clean['introduced']} | {clean['reviewed']} | {'yes' if clean['within_goal'] else 'no'} |")
    ours = [cells[k][BEST] for k in cells]
    lines += [f"Of {totals['cells']} held-out cells: the canary count is within |flagged - wrong| <= 0.15 wrong + "
              f"0.002 n in **{totals['count']}** (on the same runs: the count before, `{PREVIOUS}`, "
              f"{totals['previous']}; the small-loss canary count {totals['before']}; confident learning's "
              f"{totals['cl']}); under half the truth in {totals['under']} (before: {totals['previous under']}), over "
              f"twice it in {totals['over']} (before: {totals['previous over']}); by "
              "noise rate: " + ", ".join(f"{r:.0%} {a}/{b}" for r, (a, b) in sorted(by_rate.items())) + ". "
              f"Our detector's AP is ahead of both small loss and confident learning in **{totals['ahead']}** and "
              f"at least level with both in **{totals['level']}** (mean AP ours {mean(ours):.4f}, small loss "
              f"{mean([cells[k]['small_loss'] for k in cells]):.4f}, confident learning "
              f"{mean([cells[k]['confident_learning'] for k in cells]):.4f}). The cleaned copy (relabel rule "
              f"`{CHOSEN_RULE}`) at the canary count introduces at most a tenth of the wrong labels it removes in **{totals['clean']}** "
              f"(at the count before: {totals['previous clean']}; the rule before, `{BEFORE_RULE}` alone, on the "
              f"same runs: {totals['clean_before']}): "
              + "; ".join(f"{d} {totals[f'{d} clean']} of {totals[f'{d} cells']}, {totals[f'{d} introduced']} "
                          "introduced against "
                          f"{totals[f'{d} removed']} removed (before: {totals[f'{d} introduced before']} against "
                          f"{totals[f'{d} removed before']})" for d in ("mnist", "fashion-mnist")) + ".",
              "", *table, "", *same_images(held)]
    lines += full_size_table(out, chosen, held_out)
    lines += floor_table(out, chosen, held_out)
    return write_readme(out, lines)


def floor_table(out: Path, chosen: str, held_out: int) -> list[str]:
    """The subsets with no noise added (runs-floor/, development seed): the benchmark's truth is that
    no judged label is wrong, so what the count flags there is its floor on that dataset; and how
    many of the clean images the held-out runs at 1% flag are among the floor's."""
    folders = sorted(s.parent for s in (out / "runs-floor").glob("*/summary.json"))
    if not folders:
        return []
    lines = ["", "## With no noise added (development seed)", "",
             "The 3,000-example subsets as the datasets ship them, 5% canaries planted. The benchmark counts every "
             "shipped label as right, so what a count flags here is its floor: images the network cannot tell from "
             "a flip, and the dataset's own wrong labels.", "",
             "| dataset | method | judged | flagged | count before | small-loss count | CL count | relabelled |",
             "|" + "---|" * 8]
    for folder in folders:
        k, c = key_of(folder.name), {}
        for r in measure(folder):
            c[(r["measure"], r["detector"])] = r
        counts = " | ".join(str(c[("count", name)]["value"]) for name in (chosen, PREVIOUS, BEFORE, CL))
        judged = int(load_benchmark_evidence(folder).judged.sum())
        lines.append(f"| {k['dataset']} | {k['method']} | {judged} | {counts} | "
                     f"{c[('clean', chosen)]['introduced']} |")
    lines.append("")
    for dataset in sorted({key_of(f.name)["dataset"] for f in folders}):
        floor = set().union(*(flagged_clean(f) for f in folders if key_of(f.name)["dataset"] == dataset))
        runs = [flagged_clean(f) for f in sorted((out / "runs").glob(f"{dataset}_*01_*_s{held_out}"))
                if (f / "summary.json").is_file()]
        if runs:
            lines.append(f"- {dataset}: the no-noise runs flag {len(floor)} images between them; of the clean images "
                         f"each held-out run at 1% noise flags ({min(map(len, runs))} to {max(map(len, runs))}), "
                         f"{min(len(r & floor) for r in runs)} to {max(len(r & floor) for r in runs)} are among them")
    return lines


def flagged_clean(folder: Path) -> set[int]:
    """The dataset indices of the clean (truly right) examples a run flags at the library's count."""
    from cdr_fast.detection import BEST, DETECTORS, rank_suspects

    e = load_benchmark_evidence(folder)
    flagged = rank_suspects(DETECTORS[BEST].suspects(e), canary_noise_rate(e), e.judged).flagged
    return set(e.index[flagged & (e.given_label == e.clean_label)].tolist())


def load_benchmark_evidence(folder: Path):
    """A run's evidence with the benchmark's truth: a run that added no noise keeps no clean labels,
    and the benchmark counts every label it was given as right."""
    from cdr_fast.detection import load_evidence

    e = load_evidence(folder)
    if e.clean_label is None:
        e.clean_label = e.given_label.copy()
    return e


def same_images(held: list[dict]) -> list[str]:
    """How many distinct images the cleaned copy's introduced wrong labels are, per dataset, and how
    many of them the ten most often relabelled account for: the same few images in run after run
    are more likely the dataset's own wrong labels, which the benchmark counts as right."""
    lines = []
    for dataset in sorted({r["dataset"] for r in held}):
        times = Counter(i for r in held if r["dataset"] == dataset and r["measure"] == "clean_rule"
                        and r["detector"] == CHOSEN_RULE for i in r["introduced_at"])
        runs = len([r for r in held if r["dataset"] == dataset and r["measure"] == "clean_rule"
                    and r["detector"] == CHOSEN_RULE])
        top = times.most_common(10)
        lines.append(f"- {dataset}: the copy's {sum(times.values())} introduced wrong labels over {runs} runs are "
                     f"{len(times)} images; the ten most often relabelled account for {sum(c for _, c in top)} "
                     f"(each in {top[-1][1] if top else 0} to {top[0][1] if top else 0} of the runs)")
    return lines


def relabel_rules(dev: list[dict]) -> list[str]:
    """The relabel rules on the development half, at the library's count: cells within the copy's
    goal (and of them, those that relabel at least one wrong label right), removed and introduced."""
    lines = []
    for name in RULES:
        rs = [r for r in dev if r["measure"] == "clean_rule" and r["detector"] == name]
        ok = [r for r in rs if r["within_goal"]]
        by = {d: [r for r in rs if r["dataset"] == d] for d in ("mnist", "fashion-mnist")}
        lines.append(f"- relabel rule `{name}`: the copy within its goal in {len(ok)} of {len(rs)} cells "
                     f"({sum(r['value'] > 0 for r in ok)} of them relabelling at least one right); "
                     + "; ".join(f"{d} {sum(r['introduced'] for r in g)} introduced against "
                                 f"{sum(r['value'] for r in g)} removed" for d, g in by.items()))
    chosen = max(RULES, key=lambda name: sum(r["within_goal"] and r["value"] > 0 for r in dev
                                             if r["measure"] == "clean_rule" and r["detector"] == name))
    lines += [f"- **chosen: relabel rule `{chosen}`** (most cells within the goal that relabel at least one right)", ""]
    if chosen != CHOSEN_RULE:
        lines += [f"**The library relabels by `{CHOSEN_RULE}`, not the development half's choice: see "
                  "relabel_confidently in cdr_fast/detection/count.py.**", ""]
    return lines


def full_size_table(out: Path, chosen: str, held_out: int) -> list[str]:
    """The whole training sets (``--full-size``: runs-full/), held-out seed, under the same choices."""
    from cdr_fast.detection import BEST

    folders = sorted(s.parent for s in (out / "runs-full").glob(f"*_s{held_out}/summary.json"))
    if not folders:
        return []
    lines = ["", f"## The whole training sets (held-out seed {held_out}), under the same choices", "",
             "`python scripts/detection_count.py --out results/detection-canaries --workers 2 --canaries 0.05 "
             "--full-size`: 54,000 training examples (2,700 canaries) and 6,000 held out.", "",
             "| dataset | noise | rate | method | truly wrong | flagged | count within goal | count before | "
             "small-loss count | CL count | AP ours | AP small loss | AP conf. learning | relabelled right | "
             "introduced | reviewed | clean within goal |",
             "|" + "---|" * 17]
    totals = defaultdict(int)
    for folder in folders:
        k, c = key_of(folder.name), {}
        for r in measure(folder):
            c[(r["measure"], r["detector"])] = r
        count, cl, clean = c[("count", chosen)], c[("count", CL)], c[("clean", chosen)]
        totals["count"] += count["within_goal"]
        totals["before"] += c[("count", BEFORE)]["within_goal"]
        totals["previous"] += c[("count", PREVIOUS)]["within_goal"]
        totals["clean"] += clean["within_goal"]
        totals["previous clean"] += c[("clean", PREVIOUS)]["within_goal"]
        lines.append(f"| {k['dataset']} | {k['kind']} | {k['rate']:.0%} | {k['method']} | {count['truly_wrong']} | "
                     f"{count['value']} | "
                     f"{'yes' if count['within_goal'] else 'no'} | {c[('count', PREVIOUS)]['value']} | "
                     f"{c[('count', BEFORE)]['value']} | {cl['value']} | "
                     f"{c[('ap', BEST)]['value']:.4f} | "
                     f"{c[('ap', 'small_loss')]['value']:.4f} | {c[('ap', 'confident_learning')]['value']:.4f} | "
                     f"{clean['value']} | {clean['introduced']} | {clean['reviewed']} | "
                     f"{'yes' if clean['within_goal'] else 'no'} |")
    lines += ["", f"Of {len(folders)} cells: the count is within the goal in **{totals['count']}** (the count "
              f"before: {totals['previous']}; the small-loss canary count: {totals['before']}); the cleaned copy "
              f"meets its goal in **{totals['clean']}** (at the count before: {totals['previous clean']})."]
    return lines


def canary_cost(dev: list[dict], canary_free: Path) -> list[str]:
    """What the canaries cost the ranking: our detector's AP on the development cells with and
    without them (the canary-free grid's seed-1 runs)."""
    from cdr_fast.detection import BEST, DETECTORS, average_precision, load_evidence

    pairs = []
    for r in dev:
        if r["measure"] != "ap" or r["detector"] != BEST:
            continue
        name = f"{r['dataset']}_{r['kind']}{round(r['rate'] * 100):02d}_{r['method']}_s1"
        folder = canary_free / "runs" / name
        if (folder / "evidence.npz").is_file():
            e = load_evidence(folder)
            pairs.append((r["value"], average_precision(DETECTORS[BEST].suspects(e).score, e.truly_noisy)))
    if not pairs:
        return []
    with_c, without = np.array(pairs).T
    return [f"- what the canaries cost the ranking, on {len(pairs)} development cells: our detector's mean AP "
            f"{with_c.mean():.4f} with them, {without.mean():.4f} without (the canary-free grid, same seed; "
            f"higher with them in {int((with_c > without).sum())})"]
