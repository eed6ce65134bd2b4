"""The segmentation task: ``config`` (params ``model`` and ``train``), ``step`` (one iteration, the paper's §3–§4)
and ``run`` (networks, data, the loop, saved models). What each method does is in :mod:`corda.methods`."""
