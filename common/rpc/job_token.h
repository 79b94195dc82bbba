// Job tokens: a per-job secret that every call of a job carries as gRPC metadata
// ("authorization: Bearer <token>"). The first Join of a job on a shard fixes the job's token;
// later calls without one are UNAUTHENTICATED, calls with another PERMISSION_DENIED. Workers read
// the token from a file (never a flag value, which `ps` would show).
//
//   absl::StatusOr<std::string> token = common::ReadJobToken(path, "token_file");
//   context->AddMetadata(std::string(common::kJobTokenMetadataKey), common::BearerValue(*token));
//
//   // shard side:
//   absl::StatusOr<std::string> presented = common::JobTokenFromMetadata(values);
//   std::string digest = common::JobTokenDigest(*presented);
//   absl::Status st = common::CheckJobToken(job_digest, presented_digest, job_id);
//
// A token is 16 to 1024 bytes of printable ASCII without spaces (what gRPC metadata can carry);
// `openssl rand -hex 32` makes a good one. Tokens are never logged or put in messages; shards keep
// only their SHA-256 digest (in memory and in --state_dir) and compare digests in constant time.
#ifndef TERNPS_COMMON_RPC_JOB_TOKEN_H_
#define TERNPS_COMMON_RPC_JOB_TOKEN_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ternps::common {

inline constexpr absl::string_view kJobTokenMetadataKey = "authorization";
inline constexpr size_t kMinJobTokenBytes = 16;
inline constexpr size_t kMaxJobTokenBytes = 1024;
// Size of JobTokenDigest's result.
inline constexpr size_t kJobTokenDigestBytes = 32;

// OK if `token` has the form above; INVALID_ARGUMENT naming `field` otherwise (the message gives
// the length and the offending position, never the token).
absl::Status ValidateJobToken(absl::string_view token, absl::string_view field);

// The token in file `path`, trailing whitespace (a final newline) removed, validated.
absl::StatusOr<std::string> ReadJobToken(const std::string& path, absl::string_view field);

// "Bearer <token>".
std::string BearerValue(absl::string_view token);

// The token a call carries, from the values of its `authorization` metadata: empty if there is
// none (a valid token is never empty); UNAUTHENTICATED naming the metadata key for several values,
// another scheme than Bearer, or a token of the wrong form.
absl::StatusOr<std::string> JobTokenFromMetadata(const std::vector<absl::string_view>& values);

// SHA-256 of `token` (kJobTokenDigestBytes bytes); empty for an empty token (a job without one).
std::string JobTokenDigest(absl::string_view token);

// Whether a call whose token has digest `presented` (empty: the call has no token) may act on
// job `job_id`, whose first Join fixed `expected` (empty: the job has no token). OK when both are
// empty or both equal (compared in constant time); UNAUTHENTICATED when the job has a token and
// the call none; PERMISSION_DENIED otherwise.
absl::Status CheckJobToken(absl::string_view expected, absl::string_view presented,
                           absl::string_view job_id);

}  // namespace ternps::common

#endif  // TERNPS_COMMON_RPC_JOB_TOKEN_H_
