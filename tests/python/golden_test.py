"""The Python package's codec (ternps._ternps.codec, the C++ codec through the bindings)
reproduces every golden vector of tests/data/codec_golden.txt bit for bit: statistics, clip
threshold, TERNARY_2BIT codes of the Philox stream and their decoding, INT_SUM and INT_SUM_RADIX
packing and their decoding, the latter also by the pure-Python client's numpy decoder (ctest label
`python`)."""

import os
import struct
import unittest

import numpy as np

from ternps._ternps import codec
from ternps.client import Client
from ternps.errors import TernpsError

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data",
                      "codec_golden.txt")


def cases():
    case = {}
    with open(GOLDEN) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("#"):
                continue
            if not line:
                if case:
                    yield case
                case = {}
                continue
            key, _, value = line.partition(": ")
            case[key] = value
    if case:
        yield case


def floats(hexes):
    return np.array([struct.unpack(">f", bytes.fromhex(h))[0] for h in hexes.split()],
                    dtype=np.float32)


def float_hex(values):
    return " ".join(struct.pack(">f", float(v)).hex() for v in np.asarray(values, np.float32))


def byte_hex(data):
    return " ".join(f"{b:02x}" for b in data)


class GoldenTest(unittest.TestCase):
    def test_every_case(self):
        seen = {"TERNARY_2BIT": 0, "INT_SUM": 0, "INT_SUM_RADIX": 0}
        for c in cases():
            with self.subTest(case=c["case"]):
                seen[c["encoding"]] += 1
                if c["encoding"] == "TERNARY_2BIT":
                    g = floats(c["input"])
                    self.assertEqual(len(g), int(c["elements"]))
                    sigma, max_abs, clip = codec.stats(g, floats(c["clip_sigmas"])[0])
                    self.assertEqual(float_hex([sigma, max_abs, clip]),
                                     " ".join([c["sigma"], c["max_abs"], c["clip"]]))
                    scaler = floats(c["scaler"])[0]
                    data = codec.ternarize(g, clip, scaler, int(c["seed"]), int(c["worker"]),
                                           int(c["step"]), int(c["partition"]))
                    self.assertEqual(byte_hex(data), c["bytes"])
                    decoded = codec.decode_ternary(bytes.fromhex(c["bytes"].replace(" ", "")),
                                                   len(g), scaler)
                    self.assertEqual(float_hex(decoded), c["decoded"])
                elif c["encoding"] == "INT_SUM":
                    sums = np.array([int(v) for v in c["sums"].split()], np.int16)
                    n = int(c["contributors"])
                    data = codec.encode_int_sum(sums, n)
                    self.assertEqual(byte_hex(data), c["bytes"])
                    decoded = codec.decode_int_sum(data, len(sums), n, floats(c["scaler"])[0])
                    self.assertEqual(float_hex(decoded), c["decoded"])
                else:  # INT_SUM_RADIX: the C++ codec, and the pure-Python client's own decoder
                    sums = np.array([int(v) for v in c["sums"].split()], np.int16)
                    n = int(c["contributors"])
                    data = codec.encode_int_sum_radix(sums, n)
                    self.assertEqual(byte_hex(data), c["bytes"])
                    decoded = codec.decode_int_sum_radix(data, len(sums), n,
                                                         floats(c["scaler"])[0])
                    self.assertEqual(float_hex(decoded), c["decoded"])
                    fields = Client._radix_fields(data, len(sums), n)
                    np.testing.assert_array_equal(fields - n, sums)
        self.assertGreater(seen["TERNARY_2BIT"], 0)
        self.assertGreater(seen["INT_SUM"], 0)
        self.assertGreater(seen["INT_SUM_RADIX"], 0)

    def test_bad_input_raises_with_the_field(self):
        import ternps
        with self.assertRaises(ternps.TernpsError) as raised:
            codec.decode_int_sum(b"\xff", 2, 1, 1.0)  # fields of 3 > 2N = 2
        self.assertEqual(raised.exception.code, "INVALID_ARGUMENT")


class PureClientChecksAveragesTest(unittest.TestCase):
    """The pure-Python client checks every average a shard sends back before it writes any
    gradient: a wrong field is TernpsError INVALID_ARGUMENT naming it (no hang, no garbage)."""

    def setUp(self):
        from ternps.v1 import ternps_pb2 as pb
        self.pb = pb
        self.client = Client.__new__(Client)  # the checks need only these two settings
        self.client.world_size, self.client.int_sum_radix = 4, True
        self.sums = np.array([(7 * j + 3) % 9 - 4 for j in range(173)], np.int16)
        self.pushed = pb.PartitionPayload(partition_id=3, encoding=pb.TERNARY_2BIT,
                                          scaler=0.5, elements=173)
        self.good = pb.PartitionPayload(partition_id=3, encoding=pb.INT_SUM_RADIX, scaler=0.5,
                                        elements=173, contributors=4,
                                        data=codec.encode_int_sum_radix(self.sums, 4))

    def decode(self, average, pushed=None):
        return self.client._decode(average, pushed or self.pushed, 0.5, "averages[0]")

    def refused(self, average, message, pushed=None):
        with self.assertRaises(TernpsError) as raised:
            self.decode(average, pushed)
        self.assertEqual(raised.exception.code, "INVALID_ARGUMENT")
        self.assertIn(message, raised.exception.message)

    def test_a_good_average_decodes_like_the_cpp_codec(self):
        self.assertEqual(float_hex(self.decode(self.good)),
                         float_hex(codec.decode_int_sum_radix(self.good.data, 173, 4, 0.5)))

    def test_bad_fields_are_named(self):
        pb = self.pb
        bad = pb.PartitionPayload()
        bad.CopyFrom(self.good)
        data = bytearray(self.good.data)
        # Word 33, the second of the last block's 3 (13 elements): 4 digits, so below 9^4.
        data[2 * 33:2 * 33 + 2] = (6561).to_bytes(2, "little")
        bad.data = bytes(data)
        self.refused(bad, "averages[0].data: word 33 is 6561, not below 6561")
        data = bytearray(self.good.data)
        data[0:2] = (59049).to_bytes(2, "little")  # 9^5: one digit too many in a whole block
        bad.data = bytes(data)
        self.refused(bad, "averages[0].data: word 0 is 59049, not below 59049")
        bad.data = self.good.data[:-2]
        self.refused(bad, "averages[0].data: 68 bytes, expected 70")
        bad.CopyFrom(self.good)
        bad.contributors = 0  # once looped for ever on R = 1
        self.refused(bad, "averages[0].contributors: 0 is outside [1, 4]")
        bad.CopyFrom(self.good)
        bad.contributors = 3  # N = 3 answers INT_SUM (radix not smaller)
        self.refused(bad, "averages[0].encoding: INT_SUM_RADIX, expected INT_SUM")
        bad.CopyFrom(self.good)
        bad.scaler = 0.25
        self.refused(bad, "averages[0].scaler: 0.25 is not the shared scaler 0.5")
        bad.CopyFrom(self.good)
        bad.elements = 172
        self.refused(bad, "averages[0].elements: 172, expected 173")
        bad.CopyFrom(self.good)
        bad.partition_id = 4
        self.refused(bad, "averages[0].partition_id: 4, expected 3")
        # INT_SUM at N = 3: 3 bits per field, 7 is above 2N = 6.
        int_sum = pb.PartitionPayload(partition_id=3, encoding=pb.INT_SUM, scaler=0.5,
                                      elements=2, contributors=3, data=bytes([0x3f]))
        pushed = pb.PartitionPayload(partition_id=3, encoding=pb.TERNARY_2BIT, elements=2)
        self.refused(int_sum, "averages[0].data: field 0 is 7, above 2N = 6", pushed)
        # FP32: a NaN.
        fp32 = pb.PartitionPayload(partition_id=3, encoding=pb.FP32, elements=2, contributors=2,
                                   data=struct.pack("<2f", 1.0, float("nan")))
        pushed = pb.PartitionPayload(partition_id=3, encoding=pb.FP32, elements=2)
        self.refused(fp32, "averages[0].data: element 1 is not finite", pushed)


if __name__ == "__main__":
    unittest.main(verbosity=2)
