"""Imported by the workers' fork server only (its preload list), never elsewhere.

The fork server dies with the search that started it (Linux: the kernel sends SIGKILL), and its
workers die with it. Without this, a search killed while one worker was paused for another's timing
(SIGSTOP) left that worker paused forever: every worker holds the fork server's liveness pipe, so
the server never saw the search go and never exited, and a paused worker cannot notice anything.
"""

from compactnas.search.backends.workers import die_with_parent

die_with_parent()
