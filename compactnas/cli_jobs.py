"""``compactnas submit`` and ``compactnas jobs``: the command line of compactnas.search.backends.jobs."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from compactnas.core.errors import ConfigError
from compactnas.search.backends import jobs

_ADDRESS_HELP = "the cluster's job server (dashboard), http://HEAD:8265"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "submit",
        help="submit a compactnas command (usually a search) to a Ray cluster as a job",
        description="Runs `compactnas ARGS...` as a Ray job, with the project as its working directory. "
        "A search gets --backend ray unless it names a backend. Example: "
        "compactnas submit --address http://HEAD:8265 -- search --trials 100 --tracking-uri http://HEAD:5000",
    )
    p.add_argument("--address", required=True, help=_ADDRESS_HELP)
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
    j.add_argument("--address", required=True, help=_ADDRESS_HELP)
    j.add_argument(
        "--follow", action="store_true", help="with logs: keep printing until the job ends"
    )
    j.set_defaults(func=_cmd_jobs)


def _cmd_submit(args: argparse.Namespace) -> int:
    job_id, entrypoint = jobs.submit_job(
        args.address, args.args, working_dir=args.working_dir, job_id=args.job_id
    )
    print(job_id)
    print(f"submitted: {entrypoint}", file=sys.stderr)
    return _follow(args.address, job_id) if args.follow else 0


def _follow(address: str, job_id: str) -> int:
    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    status = jobs.follow_job(address, job_id, write)
    print(f"job {job_id}: {status}", file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1


def _cmd_jobs(args: argparse.Namespace) -> int:
    if args.action == "list":
        listed = jobs.list_jobs(args.address)
        print(f"{'job id':<28} {'status':<10} {'started':<20} entrypoint")
        for job in listed:
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["start_time"]))
            print(f"{job['job_id']:<28} {job['status']:<10} {started:<20} {job['entrypoint']}")
        return 0
    if not args.job_id:
        raise ConfigError(f"'jobs {args.action}' needs a job id")
    if args.action == "status":
        print(jobs.job_status(args.address, args.job_id))
    elif args.action == "logs":
        if args.follow:
            return _follow(args.address, args.job_id)
        sys.stdout.write(jobs.job_logs(args.address, args.job_id))
    else:
        stopped = jobs.stop_job(args.address, args.job_id)
        print(f"job {args.job_id}: {'stop requested' if stopped else 'already finished'}")
    return 0
