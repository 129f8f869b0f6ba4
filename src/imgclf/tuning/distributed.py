"""A search spread over machines, KerasTuner's chief/worker mode: the chief holds the oracle
behind a gRPC server and runs no trial; workers ask it for trials and run them into the
shared TUNE_DIR. The chief stops its server and returns once every trial has ended and every
worker it has seen has been told the search is over.
"""

from __future__ import annotations

import re
import socket
import time
from concurrent import futures
from pathlib import Path

import grpc

# KerasTuner internals, here alone: the servicer and the exit test of its chief, which imgclf
# serves in its own loop (see _serve)
from keras_tuner.src import protos
from keras_tuner.src.distribute.oracle_chief import OracleServicer, exit_chief

from imgclf import interrupts
from imgclf.config import Config, load_config
from imgclf.errors import ConfigError, ImgclfError
from imgclf.runs import holding, read_manifest
from imgclf.tuning.results import finish, on_interrupt
from imgclf.tuning.search import TUNE_MANIFEST, check, exists, reopen, start_dir
from imgclf.tuning.tuner import CHIEF, make_tuner, set_role

# a worker's tuner state is keras_tuner/<name>.json: these are the oracle's file and the tuner
# file of a search run in one process
TAKEN_NAMES = ("oracle", "tuner0")


def parse_endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); one line naming the option when malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--chief expects HOST:PORT, e.g. 127.0.0.1:8000. Received: --chief {text}")
    return host.strip("[]"), int(port)


def check_worker_name(name: str) -> str:
    # KerasTuner takes any id containing "chief" for the chief
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or "chief" in name:
        raise ConfigError(f"--worker needs a name of letters, digits, _ . - without 'chief'. "
                          f"Received: --worker {name}")
    if name in TAKEN_NAMES:
        raise ConfigError(f"--worker: {name} is taken (a worker writes keras_tuner/NAME.json, and "
                          f"{' and '.join(n + '.json' for n in TAKEN_NAMES)} are KerasTuner's own files); "
                          f"pick another name. Received: --worker {name}")
    return name


def _address(host: str, port: int) -> str:
    """HOST:PORT, an IPv6 host in brackets ([::1]:8000), as gRPC takes it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _dial_address(host: str, port: int) -> str:
    """The address workers dial: this machine's name when the chief listens on every address."""
    return _address(socket.getfqdn() if host in ("0.0.0.0", "::", "") else host, port)


def _probe_port(host: str, port: int) -> None:
    """A port that cannot be listened on (another process holds it) is found before the tune
    directory is filled; gRPC would only say so once the chief starts serving."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server binds
            probe.bind(address)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"--chief {_address(host, port)}: cannot listen there: {reason}") from None


# ------------------------------------------------------------------ the chief
def chief(cfg: Config | None, endpoint: str, directory: str | None = None, resume_dir: str | None = None,
          max_trials: int | None = None, echo=print) -> Path:
    """Serve the oracle to workers until every trial has ended; runs no trial itself."""
    if resume_dir is not None:
        exists(resume_dir)
        with holding(resume_dir, "search"):
            return _chief(cfg, endpoint, None, resume_dir, max_trials, echo)
    return _chief(cfg, endpoint, directory, None, max_trials, echo)


def _chief(cfg: Config | None, endpoint: str, directory: str | None, resume_dir: str | None,
           max_trials: int | None, echo) -> Path:
    host, port = parse_endpoint(endpoint)
    if resume_dir is not None:
        tune_dir, cfg, manifest = reopen(resume_dir, max_trials, CHIEF, ready=lambda: _probe_port(host, port))
    else:
        check(cfg)
        _probe_port(host, port)
        tune_dir, manifest = start_dir(cfg, None, directory, mode=CHIEF)
    set_role(CHIEF, host, port)
    again = f"imgclf tune --resume {tune_dir} --chief {endpoint}"
    try:
        with manifest.closing(on_interrupt(tune_dir, echo, again)):
            tuner = make_tuner(cfg, tune_dir, echo, tuner_id=CHIEF)
            tuner.save()
            with interrupts.installed():
                _serve(tuner.oracle, host, port, tune_dir, echo)
    finally:
        set_role(None)
    return finish(tune_dir, manifest, echo)


def _serve(oracle, host: str, port: int, tune_dir: Path, echo, poll_s: float = 0.5) -> None:
    """KerasTuner's servicer behind our own loop: it says each ended trial, and returns (and
    stops the server) once the oracle has no trial to give, none is running, and every worker
    it has seen has been told so."""
    # not KerasTuner's start_server (1.4): its loop never raises a Ctrl-C held during an oracle write
    # (test_keras_tuners_chief_misses_a_held_ctrl_c), nor stops its server, nor says a trial's end
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(_address(host, port))
    except RuntimeError:
        bound = 0
    if not bound:
        raise ConfigError(f"--chief {_address(host, port)}: cannot listen there (is the port in use?)")
    server.start()
    echo(f"chief: serving the oracle on {_address(host, port)}; start workers with "
         f"imgclf tune --worker NAME --chief {_dial_address(host, port)} --dir {tune_dir}")
    ended = len(oracle.end_order)
    try:
        while True:
            time.sleep(poll_s)
            interrupts.stop_if_pending()
            for trial_id in oracle.end_order[ended:]:
                trial = oracle.trials[trial_id]
                score = f", {oracle.objective.name} {trial.score:.4f}" if trial.score is not None else ""
                echo(f"chief: trial {trial_id} {trial.status.lower()}{score}")
            ended = len(oracle.end_order)
            full = bool(oracle.max_trials) and len(oracle.trials) >= oracle.max_trials
            if (servicer.stop_triggered or full) and not oracle._retry_queue and exit_chief(oracle):
                break
    finally:
        server.stop(grace=2).wait()


# ------------------------------------------------------------------ a worker
def worker(directory: str, name: str, endpoint: str, echo=print, wait_s: float = 1.0) -> Path:
    """Run trials the chief hands out until it says the search is over."""
    host, port = parse_endpoint(endpoint)
    check_worker_name(name)
    tune_dir = Path(directory)
    cfg = _chiefs_config(tune_dir, name, echo, wait_s)
    check(cfg)
    set_role(name, host, port)
    try:
        tuner = make_tuner(cfg, tune_dir, echo, tuner_id=name)
        _pause_when_idle(tuner.oracle, wait_s)
        echo(f"worker {name}: asking {_address(host, port)} for trials")
        with interrupts.installed():
            tuner.search()
    except grpc.RpcError as exc:  # the chief is gone (KerasTuner's client waits up to an hour)
        code = exc.code().name if callable(getattr(exc, "code", None)) else type(exc).__name__
        raise ImgclfError(f"worker {name}: no chief at {_address(host, port)} ({code})") from None
    except KeyboardInterrupt:
        echo(f"worker {name} interrupted; its trial reruns when it rejoins with: imgclf tune --worker "
             f"{name} --chief {endpoint} --dir {tune_dir}")
        raise
    finally:
        set_role(None)
    echo(f"worker {name}: the search is over")
    return tune_dir


def _chiefs_config(tune_dir: Path, name: str, echo, wait_s: float) -> Config:
    """The search's config.yaml, once the chief has written it; a finished search is refused."""
    config = tune_dir / "config.yaml"
    if not config.is_file():
        echo(f"worker {name}: waiting for the chief to write {config}")
        while not config.is_file():
            time.sleep(wait_s)
    state = tune_dir / TUNE_MANIFEST
    if state.is_file() and read_manifest(state).get("status") == "finished":
        raise ConfigError(f"worker {name}: the search in {tune_dir} has finished; nothing to run "
                          f"(more trials: imgclf tune --resume {tune_dir} --chief HOST:PORT "
                          f"--set tune.max_trials=N)")
    return load_config(config)


def _pause_when_idle(client, wait_s: float) -> None:
    """An oracle that waits on other workers' trials (hyperband between rounds) answers IDLE,
    and KerasTuner's worker asks again at once: pause between asks instead."""
    ask = client.create_trial

    def create_trial(tuner_id):
        trial = ask(tuner_id)
        if trial.status == "IDLE":
            time.sleep(wait_s)
        return trial

    client.create_trial = create_trial
