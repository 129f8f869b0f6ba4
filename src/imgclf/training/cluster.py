"""TF_CONFIG, the cluster of a multi_worker run, read and checked without TensorFlow: the
command line checks it before TensorFlow's slow import, so a bad one is one line at once."""

from __future__ import annotations

import json
import os

from imgclf.errors import ConfigError


def tf_config() -> dict:
    """TF_CONFIG, checked: {"cluster": {"worker": [host:port, ...], ["chief": [...]]},
    "task": {"type": "worker"|"chief", "index": i}}."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ConfigError("train.strategy=multi_worker reads the cluster from the TF_CONFIG environment "
                          "variable, which is not set (README: Several machines)")
    try:
        conf = json.loads(raw)
        cluster, task = conf["cluster"], conf["task"]
        kind, index = task["type"], task["index"]
        members = cluster[kind]
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(members):
            raise ValueError
        if not all(isinstance(cluster[k], list) for k in cluster) or kind not in ("worker", "chief"):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise ConfigError('TF_CONFIG must be JSON like {"cluster": {"worker": ["host1:port", '
                          '"host2:port"]}, "task": {"type": "worker", "index": 0}}. '
                          f"Received: TF_CONFIG={raw[:300]}") from None
    return conf
