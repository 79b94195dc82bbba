#include "tests/common/codec/golden_file.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace ternps::testing {

const char kGoldenHeader[] =
    R"(# ternps codec golden vectors, wire format v1 (proto/ternps/v1/ternps.proto, common/codec/*.h).
# Cases are separated by blank lines; each line is "key: value". Lines starting with # are
# comments. Floats are IEEE-754 binary32 bit patterns as 8 hex digits (big-endian digit order,
# e.g. 3f800000 = 1.0), space-separated. Bytes are 2 hex digits each, space-separated, in wire
# order. Integers are decimal.
#
# encoding: TERNARY_2BIT cases give the gradient and the key, and expect:
#   sigma, max_abs      ComputeStats (population sd; sums in double, 32 lanes, fixed tree)
#   clip                clip_sigmas * sigma, or 7f800000 (+inf) when clip_sigmas is 0
#   scaler              the scaler the codes are relative to (local, or a shared one)
#   bytes               the TERNARY_2BIT payload of Ternarize(input, clip, scaler, key)
#   decoded             DecodeTernaryAdd(bytes, scaler) into zeros
# encoding: INT_SUM cases give integer sums and N, and expect bytes (EncodeIntSum) and
#   decoded = DecodeIntSumAdd(bytes, N, scaler) into zeros.
# encoding: INT_SUM_RADIX cases likewise, with EncodeIntSumRadix and DecodeIntSumRadixAdd.
)";

absl::StatusOr<std::vector<GoldenCase>> ReadGoldenFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::vector<GoldenCase> cases;
  GoldenCase current;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line[0] == '#') continue;
    if (line.empty()) {
      if (!current.empty()) cases.push_back(std::move(current));
      current.clear();
      continue;
    }
    const size_t colon = line.find(": ");
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no, ": expected 'key: value'"));
    }
    current[line.substr(0, colon)] = line.substr(colon + 2);
  }
  if (!current.empty()) cases.push_back(std::move(current));
  return cases;
}

std::string FloatsToHex(const std::vector<float>& v) {
  std::string s;
  for (float f : v) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    char buf[10];
    std::snprintf(buf, sizeof(buf), "%08x", u);
    if (!s.empty()) s += ' ';
    s += buf;
  }
  return s;
}

std::vector<float> HexToFloats(const std::string& s) {
  std::istringstream in(s);
  std::vector<float> v;
  std::string tok;
  while (in >> tok) {
    const uint32_t u = static_cast<uint32_t>(std::stoul(tok, nullptr, 16));
    float f;
    std::memcpy(&f, &u, 4);
    v.push_back(f);
  }
  return v;
}

std::string BytesToHex(const std::vector<uint8_t>& v) {
  std::string s;
  for (uint8_t b : v) {
    char buf[4];
    std::snprintf(buf, sizeof(buf), "%02x", b);
    if (!s.empty()) s += ' ';
    s += buf;
  }
  return s;
}

std::vector<uint8_t> HexToBytes(const std::string& s) {
  std::istringstream in(s);
  std::vector<uint8_t> v;
  std::string tok;
  while (in >> tok) v.push_back(static_cast<uint8_t>(std::stoul(tok, nullptr, 16)));
  return v;
}

std::string IntsToText(const std::vector<int16_t>& v) {
  std::string s;
  for (int16_t x : v) absl::StrAppend(&s, s.empty() ? "" : " ", x);
  return s;
}

std::vector<int16_t> TextToInts(const std::string& s) {
  std::istringstream in(s);
  std::vector<int16_t> v;
  int x;
  while (in >> x) v.push_back(static_cast<int16_t>(x));
  return v;
}

}  // namespace ternps::testing
