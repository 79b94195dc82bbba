// Every call is answered exactly once: a PendingCall destroyed before its last part completed is
// answered ABORTED by its destructor, a finished one never again; and a Job destroyed with a call
// still parked in it (a call that parked while the engine was removing the job) answers it.
#include "server/pending_call.h"

#include <memory>
#include <string>

#include "common/spec/job_spec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/job.h"

namespace ternps::server {
namespace {

namespace v1 = ::ternps::v1;
using ::testing::HasSubstr;

struct Answers {
  int count = 0;
  absl::Status last;
  DoneCallback Callback() {
    return [this](absl::Status st) {
      ++count;
      last = std::move(st);
    };
  }
};

TEST(PendingCallTest, AnUnfinishedCallIsAnsweredAbortedOnceWhenDestroyed) {
  Answers answers;
  v1::ShareScalersResponse response;
  {
    auto call =
        std::make_shared<PendingCall<v1::ShareScalersResponse>>(&response, 2, answers.Callback());
    EXPECT_FALSE(call->PartDone());  // one of two parts
  }
  EXPECT_EQ(answers.count, 1);
  EXPECT_EQ(answers.last.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(std::string(answers.last.message()), HasSubstr("before this call was answered"));
}

TEST(PendingCallTest, AFinishedCallIsNotAnsweredAgain) {
  Answers answers;
  v1::ShareScalersResponse response;
  {
    auto call =
        std::make_shared<PendingCall<v1::ShareScalersResponse>>(&response, 1, answers.Callback());
    Finisher finisher;
    finisher.PartDone(call);
  }
  EXPECT_EQ(answers.count, 1);
  EXPECT_TRUE(answers.last.ok()) << answers.last;
}

TEST(PendingCallTest, AJobDestroyedWithAParkedCallAnswersIt) {
  v1::JoinRequest join;
  join.set_job_id("parked");
  join.set_world_size(2);
  v1::TensorSpec* t = join.add_tensors();
  t->set_name("w");
  t->set_elements(8);
  join.mutable_codec()->set_codec(v1::CODEC_FP32);
  join.set_shard_count(1);
  absl::StatusOr<common::JobSpec> spec = common::ResolveJobSpec(join, {.shard_count = 1});
  ASSERT_TRUE(spec.ok()) << spec.status();
  ShardConfig config;
  absl::StatusOr<std::unique_ptr<Job>> job = Job::Create(*spec, config);
  ASSERT_TRUE(job.ok()) << job.status();
  for (uint32_t r = 0; r < 2; ++r) {
    join.set_worker_rank(r);
    ASSERT_TRUE((*job)->Join(join, *spec).ok());
  }
  v1::PushPullRequest push;
  push.set_job_id("parked");
  push.set_worker_rank(0);
  push.set_epoch(1);
  v1::PartitionPayload* p = push.add_partitions();
  p->set_partition_id(0);
  p->set_elements(8);
  p->set_encoding(v1::FP32);
  p->set_data(std::string(32, '\0'));
  PushPullAnswer answer;
  Answers answers;
  (*job)->PushPull(ViewOf(push), &answer, answers.Callback());
  EXPECT_EQ(answers.count, 0);  // parked: rank 1 has not pushed
  job->reset();
  EXPECT_EQ(answers.count, 1);
  EXPECT_EQ(answers.last.code(), absl::StatusCode::kAborted) << answers.last;
  EXPECT_THAT(std::string(answers.last.message()), HasSubstr("was removed from this shard"));
}

}  // namespace
}  // namespace ternps::server
