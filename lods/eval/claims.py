"""bench/claims.md: every checkable claim of the seeds, the measurement here that tests it, and a verdict.

    python -m lods.eval.claims                      # reads bench/{standard,premise,fidelity,perf}, writes bench/claims.md
    python -m lods.eval.claims --bench bench/mini   # another bench's results.json for the bench-based claims

Each claim names its source (the LODS paper, seed 002; the SDI thesis, seed 004) and is tested on the toyworld,
against ground truth, by a measurement already on disk:

- the bench (``python -m lods.bench``'s results.json: prompts x seeds x priors x backbones): paired differences
  between priors over the same (prompt, seed) pairs (:func:`lods.bench.compare`);
- the premise test (``python -m lods.eval.premise``: 2D, open and full captions, SDS at several guidances, and the
  prior's own DDIM samples);
- the fidelity table (``python -m lods.eval.fidelity``: 3D against the prior's own 2D samples);
- the speed benchmark (``python -m lods.eval.prior_speed``: U-Net calls and seconds per step).

Verdicts, for a difference expected to be positive (``sign`` +1) or negative (-1), with its bootstrap 95%
interval (:mod:`lods.stats`): **holds** when the interval excludes zero on the expected side, **does not hold**
when it excludes zero on the other side, **inconclusive at this size** when it contains zero. A claim made of
several parts holds when every part holds and does not hold when any part does not; otherwise it is
inconclusive. A claim whose measurement is missing says so (**not measured**) and names the command that makes
it. Time claims compare one benchmark run's medians (no interval): they hold or not on the stated range.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lods.stats import paired_difference

HOLDS, FAILS, OPEN, MISSING = "holds", "does not hold", "inconclusive at this size", "not measured"
DDIM_MARGIN_DB = 1.0  # "approaches the model's own DDIM sample": within this many dB below it


@dataclass(frozen=True)
class Sources:
    bench: dict | None  # lods.bench results.json
    premise: dict | None  # lods.eval.premise results.json (+ "prior_samples": the DDIM records)
    fidelity: dict | None  # lods.eval.fidelity results.json
    perf: dict[str, dict]  # backbone -> lods.eval.prior_speed json


@dataclass(frozen=True)
class Finding:
    measurement: str
    verdict: str


@dataclass(frozen=True)
class Claim:
    key: str
    source: str
    text: str
    test: str
    evaluate: Callable[[Sources], Finding]


def verdict(diff: dict, sign: int = 1) -> str:
    """The verdict of one paired difference (``PairedDifference.as_dict()``) expected to have ``sign``."""
    if not diff or diff.get("n", 0) == 0 or not math.isfinite(diff.get("mean", math.nan)):
        return MISSING
    if not diff.get("excludes_zero"):
        return OPEN
    return HOLDS if diff["mean"] * sign > 0 else FAILS


def combine(verdicts: Sequence[str]) -> str:
    """Every part holds -> holds; any part fails -> does not hold; nothing measured -> not measured."""
    measured = [v for v in verdicts if v != MISSING]
    if not measured:
        return MISSING
    if FAILS in measured:
        return FAILS
    return HOLDS if all(v == HOLDS for v in measured) and len(measured) == len(verdicts) else OPEN


def _fmt(diff: dict, fmt: str = "{:+.2f}") -> str:
    if not diff or diff.get("n", 0) == 0:
        return "no pairs"
    if diff["n"] < 2:
        return f"{fmt.format(diff['mean'])} (n=1)"
    return f"{fmt.format(diff['mean'])} [{fmt.format(diff['low'])}, {fmt.format(diff['high'])}] (n={diff['n']})"


def _missing(what: str, command: str) -> Finding:
    return Finding(f"no {what} yet: `{command}`", MISSING)


# ----------------------------------------------------------------------------------------------------------
# Bench-based claims (paired over prompts and seeds).


def _bench_pairs(
    sources: Sources,
    pairs: Sequence[tuple[str, str, int]],
    metric: str,
    title: str,
    fmt: str = "{:+.2f}",
    over_seeds: bool = False,
) -> Finding:
    """``a - b`` on ``metric`` (expected sign) for every pair, per backbone of the bench, over all prompts (and
    seeds; ``over_seeds``: over the open captions' per-prompt rows, :func:`lods.bench.over_seeds`)."""
    from lods.bench import compare

    if not sources.bench:
        return _missing("bench results in --bench", "python -m lods.bench <sweep dir> --out bench/standard")
    rows = sources.bench.get("over_seeds", {}).get("prompts", []) if over_seeds else sources.bench["runs"]
    parts, verdicts = [], []
    for a, b, sign in pairs:
        diffs = compare(rows, a, b, metrics=((metric, title, 1),))
        if not diffs:
            parts.append(f"{a} - {b}: not both in the bench")
            verdicts.append(MISSING)
        for backbone, cells in sorted(diffs.items()):
            d = cells.get("all", {}).get(metric, {})
            verdicts.append(verdict(d, sign))
            parts.append(f"{backbone}: {a} - {b} {title} {_fmt(d, fmt)}")
    return Finding("; ".join(parts), combine(verdicts))


def table1_order(s: Sources) -> Finding:
    pairs = [("lods_embedding", "lods_lora", 1), ("lods_lora", "vsd", 1), ("vsd", "sds", 1)]
    return _bench_pairs(s, pairs, "gt/psnr", "PSNR (dB)")


def vsd_floaters(s: Sources) -> Finding:
    return _bench_pairs(s, [("vsd", "sds", 1), ("vsd", "lods_embedding", 1)], "gt/floater_mass", "floaters", "{:+.4f}")


def sdi_quality(s: Sources) -> Finding:
    return _bench_pairs(s, [("sdi", "sds", 1)], "gt/psnr", "PSNR (dB)")


# ----------------------------------------------------------------------------------------------------------
# Premise-based claims (2D, captions x particles).


def _premise_values(records: Sequence[dict], prior: str, value: Callable[[dict], float], kinds=("open", "full")):
    """{(caption, seed): value} of one prior's premise (or DDIM sample) records."""
    return {
        (r["caption"], r.get("seed", 0)): value(r)
        for r in records
        if r["prior"] == prior and r.get("kind", "full") in kinds
    }


def _premise_diff(s: Sources, a: str, b: str, value: Callable[[dict], float], kinds=("open", "full")) -> dict:
    records = [*s.premise.get("runs", []), *s.premise.get("prior_samples", [])]
    return paired_difference(
        _premise_values(records, a, value, kinds), _premise_values(records, b, value, kinds)
    ).as_dict()


def _steps(s: Sources) -> str:
    steps = (s.premise or {}).get("settings", {}).get("steps")
    return f"{steps}-step runs" if steps else "runs"


def cfg_detail_and_floaters(s: Sources) -> Finding:
    parts, verdicts = [], []
    if s.premise:
        d = _premise_diff(s, "sds@100", "sds@7.5", lambda r: r["metrics"]["psnr"])
        parts.append(
            f"2D ({_steps(s)}), SDS guidance 100 - 7.5, PSNR (dB) {_fmt(d)} (expected > 0: low guidance lacks detail)"
        )
        verdicts.append(verdict(d, 1))
    else:
        parts.append("no premise test yet: `python -m lods.eval.premise`")
        verdicts.append(MISSING)
    runs = (s.fidelity or {}).get("runs", [])
    high_label, base_label = _guidance_100_pair(runs)
    # paired by backbone and prompt (the same label can name runs on both backbones)
    high = {
        (r["backbone"], r["prompt"]): r["exact"].get("floater_mass", math.nan) for r in runs if r["prior"] == high_label
    }
    default = {
        (r["backbone"], r["prompt"]): r["exact"].get("floater_mass", math.nan) for r in runs if r["prior"] == base_label
    }
    if high and default:
        backbone = sorted({r["backbone"] for r in runs if r["prior"] == high_label})
        d = paired_difference(high, default).as_dict()
        against = "the default" if base_label == "sds" else f"the same configuration at the default ({base_label})"
        parts.append(
            f"3D ({', '.join(backbone)}), SDS guidance 100 - {against}, floater mass {_fmt(d, '{:+.4f}')} "
            "(expected > 0: very large guidance floats)"
        )
        verdicts.append(verdict(d, 1))
    else:
        parts.append("no 3D guidance variants yet: `python -m lods.eval.fidelity --priors sds,sds@100`")
        verdicts.append(MISSING)
    return Finding("; ".join(parts), combine(verdicts))


def _guidance_100_pair(runs: list[dict]) -> tuple[str | None, str | None]:
    """The fidelity labels of SDS at guidance 100 and of the same configuration at its default guidance:
    ``sds@100`` and ``sds`` when both were run, else a relabelled pair such as ``sds_r06@100`` and ``sds_r06``
    (runs kept when a backbone default changed, with the old value as an explicit override)."""
    labels = {r["prior"] for r in runs}
    pairs = sorted(
        (label, label[: -len("@100")])
        for label in labels
        if label.startswith("sds") and label.endswith("@100") and label[: -len("@100")] in labels
    )
    pairs.sort(key=lambda pair: pair[1] != "sds")  # the current default first
    return pairs[0] if pairs else (None, None)


def diversity(s: Sources) -> Finding:
    parts, verdicts = [], []
    if s.premise:
        for prior in ("lods_embedding", "lods_lora"):
            d = _premise_diff(s, prior, "sds@100", lambda r: r["diversity"]["distinct_scenes"], kinds=("open",))
            parts.append(
                f"2D premise: {prior} - sds@100 ({_steps(s)}), distinct scenes of 4 particles on open captions {_fmt(d)}"
            )
            verdicts.append(verdict(d, 1))
    else:
        parts.append("no premise test yet: `python -m lods.eval.premise`")
        verdicts.append(MISSING)
    pairs = [("lods_embedding", "sds", 1), ("lods_lora", "sds", 1)]
    bench = _bench_pairs(s, pairs, "seeds/distinct_scenes", "distinct scenes over seeds", over_seeds=True)
    parts.append(f"bench, open captions: {bench.measurement}")
    verdicts.append(bench.verdict)
    return Finding("; ".join(parts), combine(verdicts))


def sdi_approaches_ddim(s: Sources) -> Finding:
    if not s.premise or not s.premise.get("prior_samples"):
        return _missing("premise test with the prior's samples", "python -m lods.eval.premise --prior-samples 7.5")
    d = _premise_diff(s, "sdi", "ddim@7.5", lambda r: r["metrics"]["psnr"], kinds=("full",))
    if d["n"] == 0:
        return _missing("SDI runs and DDIM samples on the same captions", "python -m lods.eval.premise")
    if d["n"] >= 2 and d["low"] > -DDIM_MARGIN_DB:
        result = HOLDS
    elif d["n"] >= 2 and d["high"] < -DDIM_MARGIN_DB:
        result = FAILS
    else:
        result = OPEN
    return Finding(
        f"2D ({_steps(s)}), full captions, SDI - the prior's DDIM sample (CFG 7.5), PSNR (dB) {_fmt(d)}; holds when the interval "
        f"lies above -{DDIM_MARGIN_DB:g} dB",
        result,
    )


# ----------------------------------------------------------------------------------------------------------
# Fidelity: 2D as the upper bound of 3D.


def upper_bound(s: Sources) -> Finding:
    """Per backbone and category: the bound minus the best default-configured prior that ran every prompt."""
    from lods.eval.fidelity import PRIORS as DEFAULT_LABELS

    if not s.fidelity:
        return _missing("fidelity table", "python -m lods.eval.fidelity")
    parts, verdicts = [], []
    for category, cell in s.fidelity["table"].items():
        if category == "all":
            continue
        complete = {
            name: entry
            for name, entry in cell.items()
            if name != "bound" and name.split("/")[1] in DEFAULT_LABELS and entry["n"] == cell["bound"]["n"]
        }
        for backbone in sorted({name.split("/")[0] for name in complete}):
            mine = {n: e for n, e in complete.items() if n.startswith(backbone + "/")}
            name, entry = min(mine.items(), key=lambda kv: kv[1]["gap_psnr"]["mean"])
            verdicts.append(verdict(entry["gap_psnr"], 1))
            parts.append(f"{category}: bound - best 3D ({name}) {_fmt(entry['gap_psnr'])} dB")
    if not parts:
        return _missing("complete 3D runs in the fidelity table", "python -m lods.eval.fidelity")
    return Finding("; ".join(parts), combine(verdicts))


# ----------------------------------------------------------------------------------------------------------
# Cost (the speed benchmark).


def _ratio(perf: dict, a: str, b: str, key: str = "seconds_per_step") -> float:
    try:
        return perf[a][key] / perf[b][key]
    except (KeyError, TypeError, ZeroDivisionError):
        return math.nan


def cheaper_than_vsd(s: Sources) -> Finding:
    if not s.perf:
        return _missing("speed benchmark", "make bench-perf")
    parts, verdicts = [], []
    for backbone, perf in sorted(s.perf.items()):
        for prior in ("lods_embedding", "lods_lora"):
            to_vsd, to_sds = _ratio(perf, prior, "vsd"), _ratio(perf, prior, "sds")
            if not math.isfinite(to_vsd):
                continue
            calls = perf[prior].get("unet_calls_per_step", math.nan)
            parts.append(
                f"{backbone}: {prior} {to_vsd:.2f}x VSD's time per step ({to_sds:.2f}x SDS's, {calls:g} U-Net calls)"
            )
            verdicts.append(HOLDS if to_vsd < 1 else FAILS)
    if not parts:
        return _missing("LODS and VSD in the speed benchmark", "make bench-perf")
    return Finding("; ".join(parts), combine(verdicts))


def sdi_time(s: Sources) -> Finding:
    if not s.perf:
        return _missing("speed benchmark", "make bench-perf")
    parts, verdicts = [], []
    for backbone, perf in sorted(s.perf.items()):
        ratio = _ratio(perf, "sdi", "sds")
        if math.isfinite(ratio):
            parts.append(f"{backbone}: SDI {ratio:.2f}x SDS's time per step")
            verdicts.append(HOLDS if 1.5 <= ratio <= 2.0 else FAILS)
    if not parts:
        return _missing("SDI and SDS in the speed benchmark", "make bench-perf")
    return Finding("; ".join(parts), combine(verdicts))


CLAIMS = (
    Claim(
        "table1_order",
        "LODS paper (seed 002), Table 1",
        "3D quality ranks LODS-embedding > LODS-LoRA > VSD > SDS",
        "each neighbour pair's PSNR difference over the bench's prompts and seeds",
        table1_order,
    ),
    Claim(
        "cfg_extremes",
        "LODS paper, Fig. 5",
        "a low guidance lacks detail; a very large one gives floaters",
        "SDS at guidance 100 against 7.5 in 2D (PSNR), and 100 against the default in 3D (floater mass)",
        cfg_detail_and_floaters,
    ),
    Claim(
        "vsd_floaters",
        "LODS paper, Sec. 3.6",
        "VSD starts as LODS at infinite guidance (an untrained LoRA), hence floaters",
        "VSD's floater mass against SDS's and LODS-embedding's on the bench",
        vsd_floaters,
    ),
    Claim(
        "upper_bound",
        "LODS paper, Sec. 4.4",
        "2D generation is the upper bound of 3D generation",
        "the prior's own 2D samples minus the best default 3D result per category (fidelity table)",
        upper_bound,
    ),
    Claim(
        "diversity",
        "LODS paper, Fig. 11 and A.3",
        "LODS keeps more of the caption's diversity than SDS",
        "distinct matched scenes on open captions, LODS against SDS: of 4 particles at guidance 100 (2D premise "
        "test), and over the seeds of each prompt at the defaults (bench)",
        diversity,
    ),
    Claim(
        "cheaper_than_vsd",
        "LODS paper, Sec. 3.6 and Fig. 3",
        "LODS (one more U-Net forward and backward than SDS) costs less than VSD",
        "seconds per step of each LODS variant over VSD's, one benchmark run's medians (speed benchmark)",
        cheaper_than_vsd,
    ),
    Claim(
        "sdi_quality",
        "SDI thesis (seed 004)",
        "SDI beats SDS in quality",
        "SDI minus SDS PSNR over the bench's prompts and seeds",
        sdi_quality,
    ),
    Claim(
        "sdi_time",
        "SDI thesis (seed 004)",
        "SDI takes 1.5-2x SDS's time",
        "seconds per step, SDI over SDS (speed benchmark)",
        sdi_time,
    ),
    Claim(
        "sdi_ddim",
        "SDI thesis (seed 004)",
        "SDI's 2D result approaches the model's own DDIM sample",
        f"SDI minus the prior's DDIM sample on full captions in 2D, within {DDIM_MARGIN_DB:g} dB (premise test)",
        sdi_approaches_ddim,
    ),
)


def load_sources(bench: Path, premise: Path, fidelity: Path, perf: Path) -> Sources:
    def read(path: Path) -> dict | None:
        return json.loads(path.read_text()) if path.is_file() else None

    premise_results = read(premise / "results.json")
    if premise_results is not None:
        samples = sorted((premise / "prior_samples").glob("cfg*.json"))
        premise_results["prior_samples"] = [r for p in samples for r in json.loads(p.read_text())]
    perf_results = {p.stem: json.loads(p.read_text()) for p in sorted(perf.glob("*.json"))} if perf.is_dir() else {}
    return Sources(read(bench / "results.json"), premise_results, read(fidelity / "results.json"), perf_results)


def report(sources: Sources, claims: Sequence[Claim] = CLAIMS) -> tuple[str, list[dict]]:
    rows = []
    for claim in claims:
        finding = claim.evaluate(sources)
        rows.append(
            {
                "key": claim.key,
                "source": claim.source,
                "claim": claim.text,
                "test": claim.test,
                "measurement": finding.measurement,
                "verdict": finding.verdict,
            }
        )
    lines = [
        "# The seeds' claims, tested on the toyworld",
        "",
        "Written by `python -m lods.eval.claims` from the results on disk (see its docstring for the rules). "
        "Intervals are bootstrap 95% over prompts and seeds; a verdict holds or fails only when the interval "
        "excludes zero.",
        "",
        "| claim | source | test | measurement | verdict |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['claim']} | {r['source']} | {r['test']} | {r['measurement']} | **{r['verdict']}** |")
    return "\n".join(lines) + "\n", rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        prog="python -m lods.eval.claims", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bench", type=Path, default=Path("bench/standard"), help="a lods.bench output folder")
    parser.add_argument("--premise", type=Path, default=Path("bench/premise"))
    parser.add_argument("--fidelity", type=Path, default=Path("bench/fidelity"))
    parser.add_argument("--perf", type=Path, default=Path("bench/perf"))
    parser.add_argument("--out", type=Path, default=Path("bench/claims.md"))
    args = parser.parse_args(argv)
    text, rows = report(load_sources(args.bench, args.premise, args.fidelity, args.perf))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print(text)
    return rows


if __name__ == "__main__":
    main()
