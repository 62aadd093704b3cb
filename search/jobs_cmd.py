"""``compactnas submit`` and ``compactnas jobs``: searches as Ray jobs on a cluster."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from compactnas.core.errors import ConfigError

# Never shipped to the cluster with the working directory. The package's source folders stay too: Ray
# puts the working directory on the job's import path, where `compactnas/` would shadow the package
# installed on the nodes (whose subpackages live in spaces/, search/, ... through package-dir).
_EXCLUDES = [
    ".venv", ".git", "runs", "mlruns", "mlartifacts", "__pycache__", "*.pt", "*.db", "benchmarks/results",
    "/compactnas/", "/spaces/", "/evaluators/", "/hw_profiles/", "/search/",
]  # fmt: skip


def _client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    if not address.startswith(("http://", "https://")):
        raise ConfigError(
            f"the job address is the cluster's dashboard, e.g. http://HEAD:8265, got '{address}'"
        )
    try:
        return JobSubmissionClient(address)
    except Exception as e:  # noqa: BLE001 - any failure to connect is the user's address or cluster
        raise ConfigError(
            f"cannot reach the Ray job server at {address}: {str(e).splitlines()[0]}"
        ) from None


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "submit",
        help="submit a compactnas command (usually a search) to a Ray cluster as a job",
        description="Runs `compactnas ARGS...` as a Ray job, with the project as its working directory. "
        "A search gets --backend ray unless it names a backend. Example: "
        "compactnas submit --address http://HEAD:8265 -- search --trials 100 --tracking-uri http://HEAD:5000",
    )
    p.add_argument(
        "--address", required=True, help="the cluster's job server (dashboard), http://HEAD:8265"
    )
    p.add_argument(
        "--working-dir",
        default=".",
        help="folder shipped as the job's working directory (default .)",
    )
    p.add_argument("--job-id", default=None, help="submission id (default: generated)")
    p.add_argument("--follow", action="store_true", help="print the job's logs until it ends")
    p.add_argument("args", nargs=argparse.REMAINDER, help="-- then the compactnas command to run")
    p.set_defaults(func=_cmd_submit)

    j = sub.add_parser("jobs", help="list, follow or stop jobs on a Ray cluster")
    j.add_argument("action", choices=("list", "logs", "stop", "status"), help="what to do")
    j.add_argument("job_id", nargs="?", help="the submission id (for logs, stop, status)")
    j.add_argument(
        "--address", required=True, help="the cluster's job server (dashboard), http://HEAD:8265"
    )
    j.add_argument(
        "--follow", action="store_true", help="with logs: keep printing until the job ends"
    )
    j.set_defaults(func=_cmd_jobs)


def job_entrypoint(args: list[str]) -> str:
    args = list(args[1:] if args[:1] == ["--"] else args)
    if not args:
        raise ConfigError(
            "nothing to submit: give the command after --, e.g. -- search --trials 50"
        )
    if args[0] == "search" and not any(
        a == "--backend" or a.startswith("--backend=") for a in args
    ):
        args = [*args, "--backend", "ray"]
    return "python -m compactnas " + " ".join(shlex.quote(a) for a in args)


def _cmd_submit(args: argparse.Namespace) -> int:
    entrypoint = job_entrypoint(args.args)
    wd = Path(args.working_dir).expanduser().resolve()
    if not wd.is_dir():
        raise ConfigError(f"working directory not found: {wd}")
    client = _client(args.address)
    job_id = client.submit_job(
        entrypoint=entrypoint,
        submission_id=args.job_id,
        runtime_env={"working_dir": str(wd), "excludes": _EXCLUDES},
    )
    print(job_id)
    print(f"submitted: {entrypoint}", file=sys.stderr)
    if args.follow:
        return _follow(client, job_id)
    return 0


def _follow(client: Any, job_id: str) -> int:
    from ray.job_submission import JobStatus

    printed = 0
    while True:
        status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        sys.stdout.write(logs[printed:])
        sys.stdout.flush()
        printed = len(logs)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            print(f"job {job_id}: {status.value}", file=sys.stderr)
            return 0 if status == JobStatus.SUCCEEDED else 1
        time.sleep(1.0)


def _cmd_jobs(args: argparse.Namespace) -> int:
    client = _client(args.address)
    if args.action == "list":
        jobs = sorted(client.list_jobs(), key=lambda j: j.start_time or 0)
        print(f"{'job id':<28} {'status':<10} {'started':<20} entrypoint")
        for job in jobs:
            started = time.strftime(
                "%Y-%m-%d %H:%M:%S", time.localtime((job.start_time or 0) / 1000)
            )
            print(
                f"{job.submission_id or job.job_id or '':<28} {job.status.value:<10} {started:<20} {job.entrypoint}"
            )
        return 0
    if not args.job_id:
        raise ConfigError(f"'jobs {args.action}' needs a job id")
    try:
        if args.action == "status":
            print(client.get_job_status(args.job_id).value)
        elif args.action == "logs":
            if args.follow:
                return _follow(client, args.job_id)
            sys.stdout.write(client.get_job_logs(args.job_id))
        else:
            stopped = client.stop_job(args.job_id)
            print(f"job {args.job_id}: {'stop requested' if stopped else 'already finished'}")
    except RuntimeError as e:
        raise ConfigError(f"job '{args.job_id}': {str(e).splitlines()[0]}") from None
    return 0
