// Reader and writer of tests/data/codec_golden.txt, the golden vectors that pin the wire format
// for every implementation (C++ scalar and SIMD, CUDA, Python). The format is documented in the
// file's own header comment (see golden_file.cc, kHeader).
#ifndef TERNPS_TESTS_COMMON_CODEC_GOLDEN_FILE_H_
#define TERNPS_TESTS_COMMON_CODEC_GOLDEN_FILE_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ternps::testing {

// One case: ordered "key: value" fields.
using GoldenCase = std::map<std::string, std::string>;

extern const char kGoldenHeader[];

absl::StatusOr<std::vector<GoldenCase>> ReadGoldenFile(const std::string& path);
std::string FloatsToHex(const std::vector<float>& v);
std::vector<float> HexToFloats(const std::string& s);
std::string BytesToHex(const std::vector<uint8_t>& v);
std::vector<uint8_t> HexToBytes(const std::string& s);
std::string IntsToText(const std::vector<int16_t>& v);
std::vector<int16_t> TextToInts(const std::string& s);

}  // namespace ternps::testing

#endif  // TERNPS_TESTS_COMMON_CODEC_GOLDEN_FILE_H_
