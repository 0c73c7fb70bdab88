"""Command line of the survey: ``python -m demo.survey prepare|results ...``."""

from __future__ import annotations

import argparse
from pathlib import Path

from colorizer.errors import fail
from demo.survey.prepare import CHECKS, load_survey, prepare_survey
from demo.survey.stats import attention_pass_rate, fool_rates
from demo.survey.storage import VoteStore, sqlite_url


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo.survey", description="Colorization Turing test.")
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="colorize a folder of real photos once and write the survey folder",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    prep.add_argument("--photos", type=Path, required=True, help="folder of real colour photos")
    prep.add_argument("--out", type=Path, required=True, help="survey folder to write")
    prep.add_argument("--model", nargs="+", default=["default"], help="models: NAME, PATH or LABEL=SOURCE")
    prep.add_argument("--temperature", nargs="+", type=float, default=[None],
                      help="temperatures in [0, 1] (default: each model's own)")
    prep.add_argument("--size", type=int, default=256, help="longer side of the images shown, pixels")
    prep.add_argument("--checks", nargs="*", default=list(CHECKS), choices=list(CHECKS),
                      help="attention checks to make")
    prep.add_argument("--force", action="store_true", help="remake images that exist")
    res = sub.add_parser("results", help="print fool rates; optionally export all votes as CSV")
    res.add_argument("--survey", type=Path, help="survey folder (its votes.sqlite is the default database)")
    res.add_argument("--db", help="database URL (default: sqlite in the survey folder)")
    res.add_argument("--csv", type=Path, help="write all votes here (participants as numbers)")
    return p  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.command == "prepare":
            manifest = prepare_survey(args.photos, args.out, args.model, args.temperature, args.size, args.checks,
                                      args.force)  # fmt: skip
            survey = load_survey(args.out)
            print(f"{manifest}: {len(survey.photos)} photos, {len(survey.pairs)} pairs, {len(survey.checks)} checks")
            return
        if args.db is None and args.survey is None:
            raise ValueError("results: give --survey or --db")
        store = VoteStore(args.db or sqlite_url(args.survey / "votes.sqlite"))
        votes = store.votes()
        for by in (None, "model", "temperature", "condition", "photo"):
            print(f"\nfool rate {'overall' if by is None else 'by ' + by}:")
            for r in fool_rates(votes, by):
                print(f"  {r.group:<32} {r.hits:>5}/{r.n:<5} {100 * r.rate:5.1f}%  [{100 * r.low:.1f}, {100 * r.high:.1f}]")
        a = attention_pass_rate(votes)
        print(f"\nattention checks passed: {a.hits}/{a.n}")
        if args.csv:
            store.to_csv(args.csv)
            print(f"wrote {len(votes)} votes to {args.csv}")
    except Exception as e:  # bad photos, model or database (driver missing, unreachable): one line
        fail("python -m demo.survey", e)


if __name__ == "__main__":
    main()
