"""Searches as Ray jobs on a cluster: submit a compactnas command, list, follow and stop jobs."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
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


def job_client(address: str) -> Any:
    """A Ray JobSubmissionClient for the cluster's dashboard at ``address`` (http://HEAD:8265)."""
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


def job_entrypoint(args: list[str]) -> str:
    """The job's shell command for ``compactnas ARGS``; a search gets ``--backend ray`` unless it names one."""
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


def submit_job(
    address: str, args: list[str], *, working_dir: str | Path = ".", job_id: str | None = None
) -> tuple[str, str]:
    """Submit ``compactnas ARGS`` with ``working_dir`` shipped along; returns (job id, entrypoint)."""
    entrypoint = job_entrypoint(args)
    wd = Path(working_dir).expanduser().resolve()
    if not wd.is_dir():
        raise ConfigError(f"working directory not found: {wd}")
    client = job_client(address)
    submitted = client.submit_job(
        entrypoint=entrypoint,
        submission_id=job_id,
        runtime_env={"working_dir": str(wd), "excludes": _EXCLUDES},
    )
    return submitted, entrypoint


def follow_job(address: str, job_id: str, write: Callable[[str], Any] = sys.stdout.write) -> str:
    """Pass the job's logs to ``write`` as they grow, until it ends; returns its final status."""
    from ray.job_submission import JobStatus

    client = job_client(address)
    printed = 0
    while True:
        status = _call(job_id, client.get_job_status, job_id)
        logs = _call(job_id, client.get_job_logs, job_id)
        write(logs[printed:])
        printed = len(logs)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return status.value
        time.sleep(1.0)


def list_jobs(address: str) -> list[dict[str, Any]]:
    """Every job on the cluster, oldest first: id, status, start time (seconds) and entrypoint."""
    jobs = sorted(job_client(address).list_jobs(), key=lambda j: j.start_time or 0)
    return [
        {
            "job_id": j.submission_id or j.job_id or "",
            "status": j.status.value,
            "start_time": (j.start_time or 0) / 1000,
            "entrypoint": j.entrypoint,
        }
        for j in jobs
    ]


def job_status(address: str, job_id: str) -> str:
    client = job_client(address)
    return _call(job_id, client.get_job_status, job_id).value


def job_logs(address: str, job_id: str) -> str:
    client = job_client(address)
    return _call(job_id, client.get_job_logs, job_id)


def stop_job(address: str, job_id: str) -> bool:
    """Ask the job to stop; False when it had already finished."""
    client = job_client(address)
    return bool(_call(job_id, client.stop_job, job_id))


def _call(job_id: str, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except RuntimeError as e:  # Ray's way of saying the job is unknown
        raise ConfigError(f"job '{job_id}': {str(e).splitlines()[0]}") from None
