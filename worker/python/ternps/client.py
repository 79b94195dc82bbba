"""A pure-Python client of the ternps protocol: the reference example of the contract in
proto/ternps/v1/ternps.proto, for environments without the C++ library.

It uses only the generated stubs (ternps.v1.ternps_pb2 and ternps_pb2_grpc, generated from
proto/ at build time), grpcio and numpy, and speaks the protocol step by step as the proto's
header describes it: Join every shard, then per step ShareScalers (the compressed partitions'
scalers) to every shard, then one PushPull per shard with the encoded partitions, then decode the
averages. It is slow (ternarizing in numpy costs far more than the C++ codec: use ternps.Worker
for training) but complete: TernGrad with scaler sharing (INT_SUM and INT_SUM_RADIX averages)
and FP32.

    client = ternps.client.Client(job_id="j", rank=1, world_size=2, shards=["127.0.0.1:7070"],
                                  tensors=[("w", 20000), ("b", 100)])
    averages = client.step([w_grad, b_grad])   # float32 arrays; returns the averages

tls_ca / tls_cert / tls_key (PEM files: TLS, mutual TLS) and token_file (the job's token, sent
as "authorization: Bearer <token>") work as in ternps.Worker.
"""

import math
from concurrent import futures

import grpc
import numpy as np

from ternps.errors import TernpsError
from ternps.v1 import ternps_pb2 as pb
from ternps.v1 import ternps_pb2_grpc as pb_grpc

__all__ = ["Client"]

# A client must accept answers larger than gRPC's default 4 MiB (an FP32 average of a full
# partition is 4 * partition_elements bytes plus framing): no limit either way.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1),
                   ("grpc.max_send_message_length", -1)]


def _error(where, rpc_error):
    return TernpsError(rpc_error.code().name, f"{where}: {rpc_error.details()}")


class Client:
    def __init__(self, job_id, rank, world_size, shards, tensors, codec="terngrad",
                 clip_sigmas=2.5, partition_elements=0, min_compress_elements=None,
                 seed=0, rpc_timeout=180.0, tls_ca="", tls_cert="", tls_key="",
                 token_file="", int_sum_radix=True):
        """partition_elements 0 and min_compress_elements None are sent as "the default": the
        client plans with the values the shards resolved (JoinResponse.settings), not with
        defaults of its own."""
        self.job_id, self.rank, self.world_size = job_id, rank, world_size
        self.tensors = [(str(n), int(e)) for n, e in tensors]
        self.timeout = rpc_timeout
        self.clip_sigmas = clip_sigmas
        self.rng = np.random.default_rng(seed * 1000003 + rank)  # any rounding stream is valid
        self.terngrad = codec == "terngrad"
        self.metadata = ()
        if token_file:
            with open(token_file, encoding="ascii") as f:
                token = f.read().rstrip()
            self.metadata = (("authorization", "Bearer " + token),)
        if tls_ca:
            def read(path):
                if not path:
                    return None
                with open(path, "rb") as f:
                    return f.read()
            creds = grpc.ssl_channel_credentials(read(tls_ca), read(tls_key), read(tls_cert))
            channels = [grpc.secure_channel(a, creds, CHANNEL_OPTIONS) for a in shards]
        else:
            channels = [grpc.insecure_channel(a, CHANNEL_OPTIONS) for a in shards]
        self.stubs = [pb_grpc.ParameterServerStub(c) for c in channels]
        self.epochs, self.owned = [], []
        start = 0
        for s, stub in enumerate(self.stubs):
            request = pb.JoinRequest(job_id=job_id, worker_rank=rank, world_size=world_size,
                                     shard_index=s, shard_count=len(shards))
            for name, n in self.tensors:
                request.tensors.add(name=name, elements=n)
            request.codec.codec = pb.CODEC_TERNGRAD if self.terngrad else pb.CODEC_FP32
            request.codec.clip_sigmas = clip_sigmas
            request.codec.partition_elements = partition_elements
            if min_compress_elements is not None:
                request.codec.min_compress_elements = min_compress_elements
            request.codec.seed = seed
            request.codec.int_sum_radix = int_sum_radix  # as the C++ library's default
            self.int_sum_radix = bool(int_sum_radix)
            try:
                answer = stub.Join(request, timeout=rpc_timeout, wait_for_ready=True,
                                   metadata=self.metadata)
            except grpc.RpcError as e:
                raise _error(f"shard {s} ({shards[s]}) Join", e) from None
            if not answer.HasField("settings") or answer.settings.codec.partition_elements == 0:
                raise TernpsError("FAILED_PRECONDITION",
                                  f"shard {s} ({shards[s]}) Join answer: settings: absent (a "
                                  "shard older than JoinResponse.settings)")
            if s > 0 and answer.settings != self.settings:
                raise TernpsError("FAILED_PRECONDITION",
                                  f"shard {s} ({shards[s]}) Join answer: settings differ from "
                                  f"shard 0's: {answer.settings} vs {self.settings}")
            self.settings = answer.settings
            self.epochs.append(answer.epoch)
            self.owned.append(list(answer.owned_partitions))
            start = max(start, answer.start_step)
        # The plan (file header, "Partitions"), from the settings the shards resolved: tensors
        # split in registration order into pieces of at most partition_elements; ids count
        # across tensors.
        resolved = self.settings.codec
        self.partitions = []  # (tensor, offset, elements, compressed)
        for t, (_, n) in enumerate(self.tensors):
            compressed = self.terngrad and n >= resolved.min_compress_elements
            for offset in range(0, n, resolved.partition_elements):
                self.partitions.append((t, offset, min(resolved.partition_elements, n - offset),
                                        compressed))
        self.step_index = start
        self.pool = futures.ThreadPoolExecutor(max_workers=max(1, len(shards)))

    def _slice(self, grads, p):
        t, offset, n, _ = self.partitions[p]
        return grads[t].reshape(-1)[offset:offset + n]

    def step(self, grads):
        """Exchanges one gradient (float32 arrays, one per tensor); returns the averages."""
        grads = [np.ascontiguousarray(g, dtype=np.float32) for g in grads]
        step = self.step_index
        # 1. Clip at clip_sigmas standard deviations; this worker's scaler is the max |g|.
        clipped, scalers = {}, {}
        for p, (_, _, _, compressed) in enumerate(self.partitions):
            if compressed:
                g = self._slice(grads, p).astype(np.float64)
                if self.clip_sigmas > 0:
                    bound = self.clip_sigmas * g.std()
                    g = np.clip(g, -bound, bound)
                clipped[p] = g
                scalers[p] = np.float32(np.abs(g).max())
        # 2. Shared scalers: the maximum over the workers, per partition, from its shard.
        def share(s):
            ids = [p for p in self.owned[s] if p in clipped]
            if not ids:
                return {}
            request = pb.ShareScalersRequest(job_id=self.job_id, worker_rank=self.rank,
                                             epoch=self.epochs[s], step=step, partition_ids=ids,
                                             scalers=[float(scalers[p]) for p in ids])
            try:
                answer = self.stubs[s].ShareScalers(request, timeout=self.timeout,
                                                     metadata=self.metadata)
            except grpc.RpcError as e:
                raise _error(f"shard {s} ShareScalers", e) from None
            return dict(zip(answer.partition_ids, answer.shared_scalers))
        shared = {}
        for part in self.pool.map(share, range(len(self.stubs))):
            shared.update(part)
        # 3. Encode and push, one PushPull per shard; 4. decode the averages.
        def push(s):
            request = pb.PushPullRequest(job_id=self.job_id, worker_rank=self.rank,
                                         epoch=self.epochs[s], step=step)
            for p in self.owned[s]:
                _, _, n, compressed = self.partitions[p]
                if compressed:
                    request.partitions.add(partition_id=p, encoding=pb.TERNARY_2BIT,
                                           scaler=shared[p], elements=n,
                                           data=self._ternarize(clipped[p], shared[p]))
                else:
                    request.partitions.add(partition_id=p, encoding=pb.FP32, elements=n,
                                           data=self._slice(grads, p).astype("<f4").tobytes())
            try:
                answer = self.stubs[s].PushPull(request, timeout=self.timeout,
                                                 metadata=self.metadata)
            except grpc.RpcError as e:
                raise _error(f"shard {s} PushPull", e) from None
            # Every average is checked and decoded before any gradient is written.
            if len(answer.averages) != len(request.partitions):
                raise TernpsError("INVALID_ARGUMENT",
                                  f"shard {s} PushPull: averages: {len(answer.averages)} for "
                                  f"{len(request.partitions)} partitions")
            return [(q.partition_id, self._decode(a, q, shared.get(q.partition_id),
                                                  f"shard {s} PushPull: averages[{i}]"))
                    for i, (q, a) in enumerate(zip(request.partitions, answer.averages))]
        decoded = list(self.pool.map(push, range(len(self.stubs))))
        for averages in decoded:
            for p, values in averages:
                self._slice(grads, p)[:] = values
        self.step_index += 1
        return grads

    def _ternarize(self, g, scaler):
        """Stochastic rounding to {-1, 0, +1} * scaler, packed 2 bits per element, element k in
        byte k/4 at bits 2*(k%4): 01 = +1, 10 = -1 (file header, TERNARY_2BIT)."""
        n = g.size
        if scaler > 0:
            keep = self.rng.random(n) < np.abs(g) / np.float64(scaler)
        else:
            keep = np.zeros(n, bool)
        codes = np.where(keep, np.where(g > 0, 1, 2), 0).astype(np.uint8)
        codes = np.concatenate([codes, np.zeros((-n) % 4, np.uint8)]).reshape(-1, 4)
        packed = codes[:, 0] | (codes[:, 1] << 2) | (codes[:, 2] << 4) | (codes[:, 3] << 6)
        return packed.astype(np.uint8).tobytes()

    @staticmethod
    def _radix_digits(contributors):
        """m, the base-(2N+1) digits per 16-bit word; 0 for N outside [1, 19]."""
        if not 1 <= contributors <= 19:
            return 0
        radix, digits = 2 * contributors + 1, 0
        while radix ** (digits + 1) <= 65536:
            digits += 1
        return digits

    @staticmethod
    def _radix_fields(data, n, contributors, where=""):
        """The fields k + N of an INT_SUM_RADIX payload (file header), in element order; a
        payload of the wrong size or with a word beyond the digits it carries is refused
        (messages start with `where`, the average's name)."""
        where = f"{where}." if where else ""
        digits = Client._radix_digits(contributors)
        if digits == 0:
            raise TernpsError("INVALID_ARGUMENT",
                              f"{where}contributors: {contributors} is outside [1, 19] "
                              "(INT_SUM_RADIX)")
        radix = 2 * contributors + 1
        if len(data) != 2 * -(-n // digits):
            raise TernpsError("INVALID_ARGUMENT",
                              f"{where}data: {len(data)} bytes, expected {2 * -(-n // digits)}")
        words = np.frombuffer(data, "<u2").astype(np.int64)
        per_block = 32 * digits
        blocks, rest = divmod(n, per_block)
        weights = radix ** np.arange(digits + 1, dtype=np.int64)
        # A word's bound: R^(digits it carries), R^m in a whole block.
        bounds = np.full(words.size, weights[digits])
        if rest:
            w = -(-rest // digits)
            carried = -(-(rest - np.arange(w)) // w)
            bounds[32 * blocks:] = weights[carried]
        bad = np.flatnonzero(words >= bounds)
        if bad.size:
            raise TernpsError("INVALID_ARGUMENT",
                              f"{where}data: word {bad[0]} is {words[bad[0]]}, not below "
                              f"{bounds[bad[0]]}")
        # Whole blocks: element 32 d + w of a block is digit d of word w.
        full = words[:32 * blocks].reshape(blocks, 1, 32) // weights[:digits].reshape(1, digits, 1)
        fields = [(full % radix).reshape(-1)]
        if rest:  # the last block: element i is digit i // w of word i % w
            i = np.arange(rest)
            fields.append((words[32 * blocks + i % w] // weights[i // w]) % radix)
        return np.concatenate(fields)

    def _decode(self, a, pushed, shared_scaler, where):
        """The float32 values of average `a`, the answer to partition `pushed` (file header:
        FP32, INT_SUM, INT_SUM_RADIX), after checking its fields against what was
        pushed: TernpsError INVALID_ARGUMENT naming the field otherwise."""
        def refuse(field, what):
            raise TernpsError("INVALID_ARGUMENT", f"{where}.{field}: {what}")
        n = pushed.elements
        if a.partition_id != pushed.partition_id:
            refuse("partition_id", f"{a.partition_id}, expected {pushed.partition_id}")
        if a.elements != n:
            refuse("elements", f"{a.elements}, expected {n}")
        contributors = a.contributors
        if not 1 <= contributors <= self.world_size:
            refuse("contributors", f"{contributors} is outside [1, {self.world_size}]")
        if pushed.encoding == pb.FP32:
            expected = pb.FP32
        elif self.int_sum_radix and self._radix_digits(contributors) * math.ceil(
                math.log2(2 * contributors + 1)) > 16:
            expected = pb.INT_SUM_RADIX  # smaller than INT_SUM's fields (AverageEncoding)
        else:
            expected = pb.INT_SUM
        if a.encoding != expected:
            refuse("encoding", f"{pb.Encoding.Name(a.encoding)}, expected "
                               f"{pb.Encoding.Name(expected)}")
        if expected == pb.FP32:
            if len(a.data) != 4 * n:
                refuse("data", f"{len(a.data)} bytes, expected {4 * n}")
            values = np.frombuffer(a.data, "<f4", count=n)
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                refuse("data", f"element {bad[0]} is not finite")
            return values
        if a.scaler != shared_scaler:
            refuse("scaler", f"{a.scaler} is not the shared scaler {shared_scaler}")
        if expected == pb.INT_SUM_RADIX:
            fields = self._radix_fields(a.data, n, contributors, where)
        else:
            bits = math.ceil(math.log2(2 * contributors + 1))
            if len(a.data) != -(-n * bits // 8):
                refuse("data", f"{len(a.data)} bytes, expected {-(-n * bits // 8)}")
            stream = np.unpackbits(np.frombuffer(a.data, np.uint8), bitorder="little")
            fields = stream[:n * bits].reshape(n, bits).astype(np.int64) @ (1 << np.arange(bits))
            bad = np.flatnonzero(fields > 2 * contributors)
            if bad.size:
                refuse("data", f"field {bad[0]} is {fields[bad[0]]}, above 2N = "
                               f"{2 * contributors}")
        # float32(k) * (scaler / float32(N)), the quotient computed once, in float32.
        quotient = np.float32(a.scaler) / np.float32(contributors)
        return (fields - contributors).astype(np.float32) * quotient

    def leave(self):
        for s, stub in enumerate(self.stubs):
            try:
                stub.Leave(pb.LeaveRequest(job_id=self.job_id, worker_rank=self.rank,
                                           epoch=self.epochs[s]), timeout=self.timeout,
                           metadata=self.metadata)
            except grpc.RpcError as e:
                raise _error(f"shard {s} Leave", e) from None
