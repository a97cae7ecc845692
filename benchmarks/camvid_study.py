"""CamVid study: the supplementary's Table 1 ablation (FPN, + FAM, + FAM + FSM, FaPN) over seeds, from scratch.

Every run trains the shipped recipe ``semseg/camvid_r18_study`` (one recipe for all four variants; how it was
chosen: ``benchmarks/results/camvid/pilot.json`` and docs/benchmarks.md) with ``fapn train``, only
``model.neck`` and ``train.seed`` changing, so a seed gives every variant the same data order and
augmentation. Runs go two at a time with one torch thread each (the 2-core machine this was written for),
checkpoints outside the repository (``--work-dir``), and each finished run's result as one JSON file under
``benchmarks/results/camvid/`` (committed with ``--commit`` as it lands). A study can span several sessions: a
run cut short continues from its last checkpoint (every 500 iterations) when the work folder is still there;
``--missing`` lists the runs still to do; ``--report`` aggregates every result present into the markdown tables
of docs/benchmarks.md (between the ``camvid-study`` markers), the short table of the README (between the
``camvid-study-summary`` markers) and the pictures in docs/images/.

Usage:
    python benchmarks/camvid_study.py --missing
    python benchmarks/camvid_study.py --commit                 # run the missing runs, two at a time
    python benchmarks/camvid_study.py --runs fpn:0 fapn:0 --commit
    python benchmarks/camvid_study.py --report                 # needs matplotlib and scipy (both in "fapn[test]")
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from camvid_ablation.plan import REPO, Run, missing_runs
from camvid_ablation.report import write_report
from camvid_ablation.runs import run_study


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = Path(os.environ.get("FAPN_DATA", REPO.parent / "shared" / "data")) / "camvid-half"
    parser.add_argument("--data", default=str(default_data), help="CamVid folder, SegNet layout (default: %(default)s)")
    parser.add_argument(
        "--runs",
        nargs="+",
        type=Run.parse,
        default=None,
        metavar="VARIANT:SEED",
        help="runs to do (default: every run of the plan without a result)",
    )
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default: %(default)s)")
    parser.add_argument(
        "--work-dir",
        default=str(Path.home() / ".cache" / "fapn" / "camvid_study"),
        help="checkpoints and logs, outside the repository (default: %(default)s)",
    )
    parser.add_argument(
        "--results",
        default=str(REPO / "benchmarks" / "results" / "camvid"),
        help="one JSON per finished run (default: %(default)s)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra recipe overrides for every run (recorded in each result; a study should not need any)",
    )
    parser.add_argument(
        "--fifo",
        action="store_true",
        help="run each training under SCHED_FIFO (chrt, root only): on a machine shared with other "
        "work it then keeps a core to itself, where nice values were measured to have no effect",
    )
    parser.add_argument("--commit", action="store_true", help="git-commit each result file as it lands")
    parser.add_argument(
        "--no-start-after",
        type=float,
        default=None,
        metavar="MINUTES",
        help="start no new run after this many minutes (to end before a session does)",
    )
    parser.add_argument("--missing", action="store_true", help="list the plan's runs without a result and exit")
    parser.add_argument("--report", action="store_true", help="aggregate the results into docs and pictures and exit")
    parser.add_argument("--docs", default=str(REPO / "docs"), help="where --report writes (benchmarks.md, images/)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.missing:
        todo = missing_runs(Path(args.results))
        print("\n".join(f"{r.variant}:{r.seed}" for r in todo) if todo else "none: the plan is complete")
        return 0
    if args.report:
        return write_report(args)
    return run_study(args)


if __name__ == "__main__":
    sys.exit(main())
