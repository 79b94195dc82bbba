#include "common/rpc/job_token.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/util/file.h"

namespace ternps::common {

absl::Status ValidateJobToken(absl::string_view token, absl::string_view field) {
  if (token.size() < kMinJobTokenBytes || token.size() > kMaxJobTokenBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": the token has ", token.size(), " bytes; it must have ", kMinJobTokenBytes, " to ",
        kMaxJobTokenBytes, " (e.g. `openssl rand -hex 32`)"));
  }
  for (size_t i = 0; i < token.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(token[i]);
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": byte ", i,
                       " of the token is not printable ASCII or is a space "
                       "(only 0x21-0x7e may appear)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadJobToken(const std::string& path, absl::string_view field) {
  absl::StatusOr<std::string> contents = ReadFileToString(path, field);
  if (!contents.ok()) return contents.status();
  std::string token(absl::StripTrailingAsciiWhitespace(*contents));
  if (absl::Status st = ValidateJobToken(token, absl::StrCat(field, " '", path, "'")); !st.ok()) {
    return st;
  }
  return token;
}

std::string BearerValue(absl::string_view token) { return absl::StrCat("Bearer ", token); }

absl::StatusOr<std::string> JobTokenFromMetadata(const std::vector<absl::string_view>& values) {
  if (values.empty()) return std::string();
  if (values.size() > 1) {
    return absl::UnauthenticatedError(absl::StrCat(kJobTokenMetadataKey, ": the call carries ",
                                                   values.size(), " values; at most one"));
  }
  constexpr absl::string_view kScheme = "Bearer ";
  const absl::string_view value = values[0];
  if (value.size() < kScheme.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
    return absl::UnauthenticatedError(
        absl::StrCat(kJobTokenMetadataKey, ": expected 'Bearer <job token>'"));
  }
  const absl::string_view token = value.substr(kScheme.size());
  if (absl::Status st = ValidateJobToken(token, kJobTokenMetadataKey); !st.ok()) {
    return absl::UnauthenticatedError(st.message());
  }
  return std::string(token);
}

std::string JobTokenDigest(absl::string_view token) {
  if (token.empty()) return {};
  std::string digest(kJobTokenDigestBytes, '\0');
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(),
         reinterpret_cast<unsigned char*>(digest.data()));
  return digest;
}

absl::Status CheckJobToken(absl::string_view expected, absl::string_view presented,
                           absl::string_view job_id) {
  if (expected.empty() && presented.empty()) return absl::OkStatus();
  if (!expected.empty() && presented.empty()) {
    return absl::UnauthenticatedError(
        absl::StrCat(kJobTokenMetadataKey, ": job '", job_id,
                     "' requires a job token and the call has none (WorkerOptions::token_file, "
                     "ternps-worker --token_file)"));
  }
  // Equal lengths here mean both are digests; the comparison's time does not depend on where
  // they differ.
  if (expected.size() == presented.size() &&
      CRYPTO_memcmp(expected.data(), presented.data(), expected.size()) == 0) {
    return absl::OkStatus();
  }
  if (expected.empty()) {
    return absl::PermissionDeniedError(absl::StrCat(
        kJobTokenMetadataKey, ": job '", job_id,
        "' was started without a job token; this call carries one (a worker of another job?)"));
  }
  return absl::PermissionDeniedError(
      absl::StrCat(kJobTokenMetadataKey, ": the call's job token is not job '", job_id, "''s"));
}

}  // namespace ternps::common
