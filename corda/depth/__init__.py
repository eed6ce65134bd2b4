"""The depth task: ``config`` (params ``depth``), ``step`` (one Monodepth2 iteration), ``run`` (the loop and the
depth-map export), ``metrics`` (the evaluation protocol)."""
