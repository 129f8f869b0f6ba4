"""A signal that arrives while the main thread waits inside TensorFlow (issue 19).

Python runs a signal handler only when the main thread runs Python code again; a first epoch
that fills a large shuffle buffer from a big photo folder keeps it in one GetNext for a minute
or more. Here a tf.data map that sleeps 15 minutes stands in for that decode; the test only
tells 'acted on' (the watchdog's 3 s) from 'hung' (the sleep), with minutes to spare."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

DRIVER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import tensorflow as tf
    from imgclf import interrupts
    from imgclf.runs import Manifest

    interrupts.install()
    run_dir = Path(sys.argv[1])
    manifest = Manifest(run_dir, "train")
    slow = lambda x: tf.py_function(lambda v: time.sleep(900) or v, [x], tf.int64)
    batches = iter(tf.data.Dataset.range(2).map(slow).shuffle(10))
    try:
        with manifest.closing(on_interrupt=lambda: print("interrupted; saved in", run_dir, flush=True)):
            print("waiting", flush=True)
            next(batches)  # 15 minutes in C++: the handler cannot run before it returns
    except KeyboardInterrupt:
        print("imgclf: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(0)
""")


def test_a_signal_stops_a_process_stuck_inside_tensorflow(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "waiting"  # after the TensorFlow import
        time.sleep(2)  # the main thread is in GetNext now
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=180)  # hung for the whole sleep before this fix
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert f"interrupted; saved in {tmp_path}" in out
    assert "imgclf: interrupted" in err
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "interrupted"
