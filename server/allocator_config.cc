// jemalloc settings of ternps-server (read at start-up; ignored without jemalloc; MALLOC_CONF in
// the environment overrides them).
//
// The shard's memory is aggregation buffers that live for the whole job plus gRPC's receive
// buffers, which it now gives back as soon as a push is summed. Freed pages are kept for
// jemalloc's default 10 s so that the next step's receive buffers reuse them warm: with 1 s the
// shard took page faults on a third more of the bytes it received (fp32, one worker, loopback:
// 91k against 65k faults over 11 steps) at the same peak RSS (268-279 MB).
extern "C" {
// NOLINTNEXTLINE: the name and type are jemalloc's interface.
const char* malloc_conf = "dirty_decay_ms:10000";
}
