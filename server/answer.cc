#include "server/answer.h"

namespace ternps::server {

void ToProto(const AnsweredAverage& a, ternps::v1::PartitionPayload* p) {
  p->set_partition_id(a.head.partition_id);
  p->set_encoding(static_cast<ternps::v1::Encoding>(a.head.encoding));
  p->set_scaler(a.head.scaler);
  p->set_elements(a.head.elements);
  p->set_contributors(a.head.contributors);
  if (a.bytes != nullptr) {
    p->set_data(reinterpret_cast<const char*>(a.bytes->data()), a.bytes->size());
  }
}

void ToProto(const PushPullAnswer& answer, ternps::v1::PushPullResponse* response) {
  response->Clear();
  response->set_step(answer.step);
  for (const AnsweredAverage& a : answer.averages) ToProto(a, response->add_averages());
}

common::PushPullRequestView ViewOf(const ternps::v1::PushPullRequest& request) {
  common::PushPullRequestView view;
  view.job_id = request.job_id();
  view.worker_rank = request.worker_rank();
  view.epoch = request.epoch();
  view.step = request.step();
  view.partitions.reserve(request.partitions_size());
  for (const ternps::v1::PartitionPayload& p : request.partitions()) {
    view.partitions.push_back(
        {.partition_id = p.partition_id(),
         .encoding = p.encoding(),
         .scaler = p.scaler(),
         .elements = p.elements(),
         .contributors = p.contributors(),
         .pieces = {absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(p.data().data()),
                                        p.data().size())}});
  }
  return view;
}

}  // namespace ternps::server
