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


if __name__ == "__main__":
    unittest.main(verbosity=2)
