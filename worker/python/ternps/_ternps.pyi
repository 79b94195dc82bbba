# Type stubs of the bindings (worker/python/ternps/_ternps.cc). A test checks that every
# WorkerOptions attribute of the built module is declared here.
from typing import Callable, Iterable, Optional, Sequence, Tuple, Union

import numpy as np

class WorkerOptions:
    job_id: str
    rank: int
    world_size: int
    shards: list[str]
    tensors: list[Tuple[str, int, bool]]
    codec: str
    clip_sigmas: float
    scaler_sharing: bool
    partition_elements: int
    min_compress_elements: int
    ternary_downlink: bool
    seed: int
    int_sum_radix: bool
    connect_timeout: float
    rpc_timeout: float
    leave_timeout: float
    threads: int
    max_call_bytes: int
    calls_in_flight_per_shard: int
    channels_per_shard: int
    snapshot_interval: int
    tls_ca_file: str
    tls_cert_file: str
    tls_key_file: str
    token_file: str
    state_slots: int
    restart_ended_job: bool
    def __init__(self) -> None: ...

Written = Callable[[Optional[str], str], None]

class Worker:
    def __init__(self, options: WorkerOptions) -> None: ...
    def step(self, gradients: list[np.ndarray]) -> None: ...
    def start_step(self) -> None: ...
    def mark_ready(self, tensors: list[int], gradients: list[np.ndarray],
                   written: Optional[Written]) -> None: ...
    def finish_step(self) -> None: ...
    def offer_state(self, state: list[np.ndarray]) -> None: ...
    def recover(self, state: list[np.ndarray], gradients: list[np.ndarray],
                apply: Callable[[int], None]) -> None: ...
    def rejoin(self) -> None: ...
    def leave(self) -> None: ...
    def close(self) -> None: ...
    @property
    def step_index(self) -> int: ...
    @property
    def partitions(self) -> int: ...
    def last_step(self) -> dict[str, Union[int, float]]: ...
