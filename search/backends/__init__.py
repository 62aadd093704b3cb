"""Where a candidate runs: this process or worker processes (``local``), Ray Tune trials (``ray_tune``),
and Ray jobs for whole searches (``jobs``); ``ray_connect`` joins or starts a cluster."""
