// jemalloc settings of ternps-server (read at start-up; ignored without jemalloc; MALLOC_CONF in
// the environment overrides them).
//
// The shard's memory is aggregation buffers that live for the whole job plus messages that come
// and go every step. jemalloc's default keeps freed pages for 10 s; returning them after 1 s keeps
// the peak RSS of a resnet50 shard (4 workers x 2 shards) at 1.81-2.03x the state the design
// needs (5 runs) instead of 2.08-2.19x, with the same step time (`ternps-bench cluster`).
// Returning them at once (0) costs page faults: step time +40%.
extern "C" {
// NOLINTNEXTLINE: the name and type are jemalloc's interface.
const char* malloc_conf = "dirty_decay_ms:1000";
}
