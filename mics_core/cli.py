"""`python -m mics_core ...`: the command line over the library's public functions."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from mics_core.config import Settings
from mics_core.errors import ECHO_CHARS, REASON_CHARS, RequestRefused, short

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

SUBCOMMANDS_HELP = "Database URL: --db, else MICS_DB_URL, else sqlite:///data/mics.db."


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="URL", help="database URL (default: MICS_DB_URL or sqlite:///data/mics.db)")


TRAIN_FLAGS = (("backbone", str), ("image_size", int), ("pretrain_epochs", int), ("finetune_steps", int))


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    """Quick-run training settings; each overrides its MICS_* variable and the preset."""
    for name, kind in TRAIN_FLAGS:
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=kind, help=f"override MICS_{name.upper()}")


def _train_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {name: getattr(args, name) for name, _ in TRAIN_FLAGS if getattr(args, name) is not None}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose epilog may be a function, called only when the help is shown
    (the review strategies' list needs the library, a second to import)."""

    def format_help(self) -> str:
        if callable(self.epilog):
            self.epilog = self.epilog()
        return super().format_help()


def _strategies_help() -> str:
    """The review strategies as the library registers them, one per line."""
    from mics_core.review import DEFAULT_STRATEGY, STRATEGIES

    names = {name: f"'{name}'" if " " in name else name for name in STRATEGIES}
    width = max(map(len, names.values())) + 2
    lines = [
        f"  {names[name]:<{width}}{strategy.description}" + (" (default)" if name == DEFAULT_STRATEGY else "")
        for name, strategy in STRATEGIES.items()
    ]
    return "strategies:\n" + "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m mics_core", description="MICS Studio command line.", epilog=SUBCOMMANDS_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    init = commands.add_parser("init", help="create or upgrade the database (and load the demo data)")
    init.add_argument(
        "--demo", action="store_true", help="if the database has no cases, generate and import the synthetic demo data"
    )
    init.add_argument("--pairs", type=int, help="demo pairs to generate (default MICS_DEMO_PAIRS or 600)")
    _add_db(init)

    demo = commands.add_parser("demo", help="write a synthetic paired WLI/NBI dataset with a ground-truth manifest")
    demo.add_argument("--out", type=Path, required=True, help="output folder")
    demo.add_argument("--pairs", type=int, default=600, help="number of WLI/NBI pairs (default 600)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")

    imp = commands.add_parser("import", help="import a manifest CSV, a folder or a zip")
    imp.add_argument(
        "source", type=Path, help="manifest.csv, folder (WLI/ + NBI/ or <class>_WLI/ + <class>_NBI/) or .zip"
    )
    imp.add_argument("--labels", type=Path, metavar="CSV", help="CSV with case_id,label to record as import labels")
    imp.add_argument("--no-labels", action="store_true", help="import images only; ignore labels in the source")
    imp.add_argument("--report", type=Path, metavar="CSV", help="also write the skipped items to this CSV")
    _add_db(imp)

    exp = commands.add_parser("export", help="export labels to CSV")
    exp.add_argument("--out", type=Path, required=True, help="output CSV file")
    exp.add_argument("--history", action="store_true", help="export every annotation row instead of one row per case")
    _add_db(exp)

    stats = commands.add_parser("stats", help="counts of cases, labels per class, modalities")
    _add_db(stats)

    bench = commands.add_parser("bench", help="benchmark MICS against baselines on a labelled manifest")
    bench.add_argument(
        "--data", type=Path, required=True, metavar="MANIFEST.csv", help="an import manifest with labels"
    )
    bench.add_argument("--labeled-fraction", type=float, default=0.05, help="share of non-test cases labelled")
    bench.add_argument("--seeds", type=int, default=3, help="number of seeds (splits) to average over")
    bench.add_argument(
        "--budget-minutes", type=float, help="cap each end-to-end baseline's training (per seed) at this many minutes"
    )
    bench.add_argument("--json", type=Path, metavar="OUT.json", help="also write the summary as JSON")
    bench.add_argument("--methods", nargs="+", default=None, help="a subset of the methods")
    bench.add_argument("--cache", type=Path, help="keep pre-trained encoders and features here between runs")
    bench.add_argument("--preset", default=None, help="cpu or gpu settings (default MICS_PRESET or cpu)")
    bench.add_argument("--baseline-steps", type=int, help="optimiser steps of each end-to-end baseline (default 200)")
    _add_train_flags(bench)

    worker = commands.add_parser("worker", help="claim queued jobs and run them")
    worker.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    worker.add_argument("--once", action="store_true", help="run at most one job, then exit")
    worker.add_argument(
        "--gpus", type=int, default=None, help="pre-train on this many GPUs of this host with torchrun (default 1)"
    )
    _add_db(worker)

    retrain = commands.add_parser("retrain", help="ask for a retrain (starts a local worker when none is alive)")
    retrain.add_argument("--wait", action="store_true", help="show progress until it ends; non-zero exit if it failed")
    retrain.add_argument("--device", default="cpu", help="device for a local worker started here")
    _add_train_flags(retrain)
    _add_db(retrain)

    jobs = commands.add_parser("jobs", help="list jobs with status and progress")
    jobs.add_argument("--limit", type=int, default=20)
    _add_db(jobs)

    cancel = commands.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("job_id", type=int)
    _add_db(cancel)

    models = commands.add_parser("models", help="list model versions")
    _add_db(models)

    activate = commands.add_parser("activate", help="make a model version the active one (roll back)")
    activate.add_argument("version_id", type=int)
    _add_db(activate)

    queue = commands.add_parser(
        "queue",
        help="cases to review, ranked (one per line: case, predicted, probability, score)",
        epilog=_strategies_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    queue.add_argument("--strategy", help="how to rank: one of the strategies below")
    queue.add_argument("--limit", type=int, default=50)
    queue.add_argument("--unlabelled-only", action="store_true", help="only cases without a label")
    queue.add_argument("--class", dest="predicted_class", metavar="NAME", help="only cases predicted as this class")
    queue.add_argument("--min-uncertainty", type=float, help="only cases at least this uncertain (0 to 1)")
    queue.add_argument("--seed", type=int, default=0, help="seed of the random and diversity strategies")
    _add_db(queue)

    classes = commands.add_parser("classes", help="show the class list, or add classes to it")
    classes.add_argument("--add", nargs="+", metavar="NAME", help="class names to append")
    _add_db(classes)

    users = commands.add_parser(
        "users",
        help="list accounts, or add one (the first administrator is made here)",
        description="The password is asked for twice at a terminal, or read as the first line of standard input.",
    )
    actions = users.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_Parser)
    _add_db(actions.add_parser("list", help="every account with its role and whether it is active"))
    add = actions.add_parser("add", help="add an account (password from the prompt or standard input)")
    add.add_argument("name", help="user name")
    role = add.add_mutually_exclusive_group()
    role.add_argument("--admin", action="store_true", help="make it an administrator")
    role.add_argument("--role", default="annotator", help="annotator, reviewer or admin (default annotator)")
    _add_db(add)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env(getattr(args, "db", None))
    handler = globals()[f"_cmd_{args.command}"]
    try:
        return handler(args, settings)
    except (UserFacingError, RequestRefused) as err:
        print(f"error: {short(str(err), REASON_CHARS)}", file=sys.stderr)
        return 2
    except OSError as err:  # a file the command needs: one sentence, not a traceback
        where = f" ({short(str(err.filename), ECHO_CHARS)})" if err.filename else ""
        print(f"error: {err.strerror or err}{where}; check the path and its permissions", file=sys.stderr)
        return 2
    except Exception as err:
        problem = _database_problem(err)
        if problem is None:
            raise
        print(f"error: {problem}", file=sys.stderr)
        return 2


def _database_problem(err: Exception) -> str | None:
    """One sentence for a database URL that is malformed or a database that cannot be opened."""
    from sqlalchemy.exc import ArgumentError, DatabaseError

    if isinstance(err, ArgumentError):
        return f"the database URL is not usable ({short(str(err), REASON_CHARS)}); {SUBCOMMANDS_HELP}"
    if isinstance(err, DatabaseError):
        detail = str(err.orig or err).strip() or type(err).__name__
        return f"the database cannot be opened or used: {short(detail.splitlines()[0], REASON_CHARS)}; check the URL"
    return None


class UserFacingError(Exception):
    """An error whose message is the whole story for the user."""


def _input_file(path: Path, what: str) -> Path:
    """`path` if it is a readable file, else a UserFacingError saying what to give instead."""
    if not path.exists():
        raise UserFacingError(f"the {what} {short(str(path))} does not exist; give the path of a file")
    if not path.is_file():
        raise UserFacingError(f"the {what} {short(str(path))} is a folder, not a file; give the path of a file")
    return path


def _output_file(path: Path, what: str) -> Path:
    """`path` if a file can be written there, checked before any work is done."""
    if path.is_dir():
        raise UserFacingError(f"the {what} {short(str(path))} is a folder; give a file name")
    if not path.parent.is_dir():
        raise UserFacingError(f"the folder of the {what} {short(str(path))} does not exist; create it first")
    return path


@contextmanager
def _session(settings: Settings) -> Iterator[Session]:
    """A transaction on the database, its schema upgraded first."""
    from mics_core.db import init_db

    with init_db(settings.db_url).session() as session:
        yield session


def _cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    from mics_core.setup import ensure_database

    summary = ensure_database(settings, demo_pairs=(args.pairs or settings.demo_pairs) if args.demo else 0)
    print(summary)
    return 0


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from mics_core.evaluation.demo import generate

    manifest = generate(args.out, pairs=args.pairs, seed=args.seed, size=args.size)
    print(f"wrote {args.pairs} synthetic pairs and {manifest}")
    return 0


def _cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from mics_core.db import init_db
    from mics_core.export import to_csv_bytes
    from mics_core.ingest.importer import import_source

    labels = _input_file(args.labels, "labels CSV") if args.labels else None
    out = _output_file(args.report, "report CSV") if args.report else None
    db = init_db(settings.db_url)
    report = import_source(args.source, db, settings, labels_csv=labels, use_labels=not args.no_labels)
    for note in report.notes:
        print(short(note, REASON_CHARS))
    for problem in report.problems:
        case, file = short(problem.case_key or "-"), short(problem.file or "-")
        print(f"skipped  {case}  {file}  {short(problem.reason, REASON_CHARS)}")
    if out:
        frame = report.problems_frame()
        for column, limit in (("case_id", ECHO_CHARS), ("file", ECHO_CHARS), ("reason", REASON_CHARS)):
            frame[column] = frame[column].map(lambda value, limit=limit: short(str(value), limit))
        out.write_bytes(to_csv_bytes(frame))
    print(report.summary())
    return 0 if report.ok else 1


def _cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from mics_core.export import export_csv

    out = _output_file(args.out, "output CSV")
    with _session(settings) as session:
        rows = export_csv(session, out, history=args.history)
    print(f"wrote {rows} rows to {args.out}")
    return 0


def _cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    from mics_core.stats import dataset_stats

    with _session(settings) as session:
        stats = dataset_stats(session)
    print(f"cases: {stats.cases}")
    print(f"labelled: {stats.labelled}")
    for name, count in stats.per_class.items():
        print(f"  {name}: {count}")
    print(f"WLI images: {stats.with_wli}")
    print(f"NBI images: {stats.with_real_nbi} real, {stats.with_computed_nbi} computed (pseudo-NBI)")
    return 0


def _cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    data = _input_file(args.data, "manifest")  # before the learning code's imports, which take seconds
    import os

    from mics_core.config import TrainSettings
    from mics_core.evaluation.benchmark import (
        METHOD_FUNCTIONS,
        METHODS,
        format_table,
        run_benchmark,
        summarise,
        write_json,
    )

    overrides = _train_overrides(args)
    if args.baseline_steps is not None:
        overrides["baseline_steps"] = args.baseline_steps
    if args.preset:
        os.environ["MICS_PRESET"] = args.preset
    try:
        train = TrainSettings.from_env(**overrides)
    except ValueError as err:
        raise UserFacingError(str(err)) from None
    methods = tuple(args.methods or METHODS)
    unknown = set(methods) - set(METHOD_FUNCTIONS)
    if unknown:
        raise UserFacingError(
            f"unknown method(s) {', '.join(sorted(unknown))}; choose from {', '.join(METHOD_FUNCTIONS)}"
        )
    print(
        f"settings: {train.pretrain.backbone} at {train.pretrain.image_size} px, "
        f"pre-train {train.pretrain.epochs} epochs, fine-tune {train.finetune.steps} steps, "
        f"baselines {train.baseline.steps} steps, device {train.device}",
        flush=True,
    )
    rows = run_benchmark(data, args.labeled_fraction, args.seeds, train, methods, args.budget_minutes, args.cache)
    summary = summarise(rows)
    print(format_table(summary))
    if args.json:
        write_json(summary, _output_file(args.json, "JSON summary"))
    return 0


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from mics_core.jobs.worker import run_worker

    run_worker(settings, args.device, args.once, gpus=args.gpus, log=lambda line: print(line, flush=True))
    return 0


def _job_line(job) -> str:
    from mics_core.db.models import JobStatus

    progress = f"{job.phase or '-'} {job.step}/{job.total}" if job.total else (job.phase or "-")
    eta = f" eta {job.eta_seconds:.0f}s" if job.eta_seconds and job.status == JobStatus.RUNNING else ""
    loss = f" loss {job.loss:.4f}" if job.loss is not None else ""
    return f"{job.id:>5}  {job.kind:<9} {job.status:<10} {progress}{loss}{eta}" + (
        f"  error: {job.error}" if job.error else ""
    )


def _cmd_retrain(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from mics_core.db import init_db
    from mics_core.db.models import Job, JobStatus
    from mics_core.jobs.queue import FINISHED, request_retrain
    from mics_core.jobs.worker import ensure_local_worker

    params = _train_overrides(args)
    db = init_db(settings.db_url)
    with db.session() as session:
        job_id = request_retrain(session, params).id
    pid = ensure_local_worker(settings, args.device)
    print(f"retrain job {job_id} queued" + (f"; started a local worker (pid {pid})" if pid else ""))
    if not args.wait:
        return 0
    last = ""
    while True:
        with db.session() as session:
            job = session.get(Job, job_id)
            line = _job_line(job)
            status = job.status
        if line != last:
            print(line, flush=True)
            last = line
        if status in FINISHED:
            return 0 if status == JobStatus.SUCCEEDED else 1
        time.sleep(1)


def _cmd_jobs(args: argparse.Namespace, settings: Settings) -> int:
    from mics_core.jobs.queue import recent_jobs

    with _session(settings) as session:
        jobs = recent_jobs(session, args.limit)
        print("\n".join(_job_line(job) for job in jobs) or "no jobs yet")
    return 0


def _cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from mics_core.db.models import JobStatus
    from mics_core.jobs.queue import cancel

    with _session(settings) as session:
        job = cancel(session, args.job_id)
        print(f"job {job.id}: " + ("cancelled" if job.status == JobStatus.CANCELLED else "will stop at its next step"))
    return 0


def _cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    import pandas as pd

    from mics_core.registry import version_table, versions

    with _session(settings) as session:
        table = version_table(versions(session))
    for v in table.itertuples(index=False):
        held_out = f"{v.accuracy:.3f}" if pd.notna(v.accuracy) else "n/a"
        print(
            f"{'*' if v.active else ' '} {v.version:>4}  {v.created:%Y-%m-%d %H:%M}  labels {v.labels:>5}  "
            f"held-out accuracy {held_out}  {v.backbone if pd.notna(v.backbone) else '-'}"
        )
    if table.empty:
        print("no model versions yet: run `python -m mics_core retrain`")
    return 0


def _cmd_activate(args: argparse.Namespace, settings: Settings) -> int:
    from mics_core.registry import activate

    with _session(settings) as session:
        activate(session, args.version_id)
    print(f"model version {args.version_id} is now active")
    return 0


def _cmd_queue(args: argparse.Namespace, settings: Settings) -> int:
    from mics_core.review import DEFAULT_STRATEGY, Filters, rank
    from mics_core.store import ImageStore

    filters = Filters(args.unlabelled_only, False, args.predicted_class, args.min_uncertainty)
    strategy = args.strategy or DEFAULT_STRATEGY
    with _session(settings) as session:
        items = rank(session, strategy, args.limit, filters, args.seed, ImageStore(settings))
    for item in items:
        probability = f"{item.probability:.3f}" if item.probability is not None else "-"
        print(f"{short(item.case_key)}\t{item.predicted or '-'}\t{probability}\t{item.score:.4f}")
    return 0


def _cmd_classes(args: argparse.Namespace, settings: Settings) -> int:
    from mics_core.labels import add_classes, class_names

    with _session(settings) as session:
        if args.add:
            added = add_classes(session, args.add)
            print(f"added: {', '.join(added) or 'nothing new'}")
        print("\n".join(class_names(session)) or "(no classes yet)")
    return 0


def _new_password() -> str:
    """Typed twice at a terminal, or the first line of standard input (for scripts)."""
    import getpass

    if sys.stdin.isatty():
        password = getpass.getpass("Password (at least 8 characters): ")
        if getpass.getpass("Repeat the password: ") != password:
            raise UserFacingError("the two passwords differ; run the command again")
        return password
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UserFacingError("no password given: type it at the prompt, or pipe it on standard input")
    return password


def _cmd_users(args: argparse.Namespace, settings: Settings) -> int:
    from mics_core.auth import accounts, create_user

    if args.action == "list":
        with _session(settings) as session:
            rows = [(u.username, u.role, u.active) for u in accounts(session)]
        for name, role, active in rows:
            print(f"{short(name)}\t{role}" + ("" if active else "\t(deactivated)"))
        if not rows:
            print("no accounts yet: python -m mics_core users add --admin NAME")
        return 0
    role = "admin" if args.admin else args.role
    password = _new_password()
    with _session(settings) as session:
        user = create_user(session, args.name, password, role)
        name = user.username
    print(f"added {role} {short(name)}; they can sign in now")
    return 0
