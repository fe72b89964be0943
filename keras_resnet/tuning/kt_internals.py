"""The one place that uses KerasTuner's private API; checked against KerasTuner 1.4.8.

KerasTuner has no public API for what the distributed-tuning guards (``chief_worker.py``) and
the resume logic (``search.py``) need: the oracle's retry queue, the lock its methods share, the
worker-side gRPC timeout, the chief's gRPC servicer and the oracle behind a worker's client.
Everything private is reached through the functions below, so a KerasTuner upgrade is checked
here and nowhere else (``KERAS_TUNER_CHECKED``).
"""

from __future__ import annotations

KERAS_TUNER_CHECKED = "1.4.8"


def retry_queue(oracle) -> list:
    """The trial ids the oracle will hand out again before new ones (``Oracle._retry_queue``)."""
    return oracle._retry_queue


def set_retry_queue(oracle, trial_ids) -> None:
    """Replaces the oracle's retry queue."""
    oracle._retry_queue = list(trial_ids)


def local_oracle(tuner):
    """The ``keras_tuner.Oracle`` object of ``tuner``: a worker's ``OracleClient`` wraps the
    oracle it was built with (``OracleClient._oracle``); a chief's or single process's is its
    own."""
    return getattr(tuner.oracle, "_oracle", tuner.oracle)


def synchronized(function):
    """KerasTuner's decorator taking the lock every ``Oracle`` method holds."""
    from keras_tuner.src.engine.oracle import synchronized as kt_synchronized

    return kt_synchronized(function)


def set_client_timeout(seconds: float) -> None:
    """Makes a worker's gRPC calls to the chief give up after ``seconds`` (KerasTuner: 1 h)."""
    from keras_tuner.src.distribute import oracle_client

    oracle_client.TIMEOUT = float(seconds)


def add_oracle_servicer(server, oracle):
    """Adds KerasTuner's ``OracleServicer`` for ``oracle`` to a ``grpc.server``; returns it."""
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    return servicer


def stop_triggered(servicer) -> bool:
    """Whether a worker was told the search is over (``OracleServicer.stop_triggered``)."""
    return bool(servicer.stop_triggered)
