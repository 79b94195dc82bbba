// Tells ThreadSanitizer about Abseil's locks when Abseil itself is not instrumented.
//
// Debian's Abseil is built without -fsanitize=thread, so ThreadSanitizer never sees the atomics
// and futex waits inside absl::Mutex, absl::CondVar and absl::Notification, and reports every
// field they guard as a race. This file, linked into the test binaries of a
// TERNPS_SANITIZE=thread build (and nothing else), interposes the out-of-line entry points of
// those classes: each forwards to Abseil's own definition (found with dlsym(RTLD_NEXT)) and
// tells the sanitizer what ordering it gave: an acquire after a lock is taken or a wait ends, a
// release before a lock is given up or a notification is sent. Calls made from inside the
// uninstrumented library (gRPC's, Abseil's own) are not seen; that is why the TSAN run covers the
// unit label, whose concurrency is ours.
//
// Notification::HasBeenNotified() is inline and reads an atomic that the uninstrumented
// Notify() wrote, so a true answer from it orders nothing for the sanitizer; ternps does not call
// it (use WaitForNotification*).
//
// Reader locks are modelled as exclusive ones (each reader's release merges into the same clock):
// that may hide a race between two readers, never invent one.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "absl/base/options.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);

namespace {

#define TERNPS_STR2(x) #x
#define TERNPS_STR(x) TERNPS_STR2(x)

// The mangled name of absl::<inline namespace>::<rest>, e.g. Real("N", "5Mutex4LockEv").
void* Real(const char* prefix, const char* rest) {
  const char* ns = TERNPS_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  const std::string name =
      std::string("_Z") + prefix + "4absl" + std::to_string(std::strlen(ns)) + ns + rest;
  void* fn = dlsym(RTLD_NEXT, name.c_str());
  if (fn == nullptr) {
    std::fprintf(stderr, "absl_sync_tsan: Abseil has no %s\n", name.c_str());
    std::abort();
  }
  return fn;
}

template <typename Fn>
Fn Lookup(const char* prefix, const char* rest) {
  return reinterpret_cast<Fn>(Real(prefix, rest));
}

using MuFn = void (*)(absl::Mutex*);
using MuTryFn = bool (*)(absl::Mutex*);
using MuCondFn = void (*)(absl::Mutex*, const absl::Condition&);
using MuCondDurFn = bool (*)(absl::Mutex*, const absl::Condition&, absl::Duration);
using MuCondTimeFn = bool (*)(absl::Mutex*, const absl::Condition&, absl::Time);
using CvWaitFn = void (*)(absl::CondVar*, absl::Mutex*);
using CvDurFn = bool (*)(absl::CondVar*, absl::Mutex*, absl::Duration);
using CvTimeFn = bool (*)(absl::CondVar*, absl::Mutex*, absl::Time);
using NoteFn = void (*)(absl::Notification*);
using NoteWaitFn = void (*)(const absl::Notification*);
using NoteDurFn = bool (*)(const absl::Notification*, absl::Duration);
using NoteTimeFn = bool (*)(const absl::Notification*, absl::Time);

void Acquire(const void* addr) { __tsan_acquire(const_cast<void*>(addr)); }
void Release(const void* addr) { __tsan_release(const_cast<void*>(addr)); }

// Abseil evaluates waiters' conditions inside its own calls, holding the lock: in the waiting
// thread before it blocks, or in whichever thread gives the lock up (Unlock, Await, CondVar::Wait,
// Notify). The sanitizer cannot see that lock, so those reads would look unordered. Reads are
// ignored for the duration of every call into Abseil (Abseil's own code is not instrumented; the
// only instrumented code it runs is the conditions), and the waiter's condition is evaluated once
// more, visibly, after its lock is taken (conditions are pure), so a real race on what a condition
// reads is still reported.
class QuietReads {
 public:
  QuietReads() { AnnotateIgnoreReadsBegin(__FILE__, __LINE__); }
  ~QuietReads() { AnnotateIgnoreReadsEnd(__FILE__, __LINE__); }
  QuietReads(const QuietReads&) = delete;
  QuietReads& operator=(const QuietReads&) = delete;
};
template <typename Fn, typename... Args>
auto Quietly(Fn fn, Args&&... args) {
  const QuietReads quiet;
  return fn(std::forward<Args>(args)...);
}
void EvalVisibly(const absl::Condition& cond) { static_cast<void>(cond.Eval()); }

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  static const auto real = Lookup<MuFn>("N", "5Mutex4LockEv");
  Quietly(real, this);
  Acquire(this);
}
void Mutex::ReaderLock() {
  static const auto real = Lookup<MuFn>("N", "5Mutex10ReaderLockEv");
  Quietly(real, this);
  Acquire(this);
}
bool Mutex::TryLock() {
  static const auto real = Lookup<MuTryFn>("N", "5Mutex7TryLockEv");
  const bool locked = Quietly(real, this);
  if (locked) Acquire(this);
  return locked;
}
bool Mutex::ReaderTryLock() {
  static const auto real = Lookup<MuTryFn>("N", "5Mutex13ReaderTryLockEv");
  const bool locked = Quietly(real, this);
  if (locked) Acquire(this);
  return locked;
}
void Mutex::Unlock() {
  static const auto real = Lookup<MuFn>("N", "5Mutex6UnlockEv");
  Release(this);
  Quietly(real, this);
}
void Mutex::ReaderUnlock() {
  static const auto real = Lookup<MuFn>("N", "5Mutex12ReaderUnlockEv");
  Release(this);
  Quietly(real, this);
}
void Mutex::LockWhen(const Condition& cond) {
  static const auto real = Lookup<MuCondFn>("N", "5Mutex8LockWhenERKNS0_9ConditionE");
  Quietly(real, this, cond);
  Acquire(this);
  EvalVisibly(cond);
}
void Mutex::ReaderLockWhen(const Condition& cond) {
  static const auto real = Lookup<MuCondFn>("N", "5Mutex14ReaderLockWhenERKNS0_9ConditionE");
  Quietly(real, this, cond);
  Acquire(this);
  EvalVisibly(cond);
}
bool Mutex::LockWhenWithTimeout(const Condition& cond, Duration timeout) {
  static const auto real =
      Lookup<MuCondDurFn>("N", "5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  const bool met = Quietly(real, this, cond, timeout);
  Acquire(this);
  EvalVisibly(cond);  // the lock is held whether or not the condition became true
  return met;
}
bool Mutex::LockWhenWithDeadline(const Condition& cond, Time deadline) {
  static const auto real =
      Lookup<MuCondTimeFn>("N", "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  const bool met = Quietly(real, this, cond, deadline);
  Acquire(this);
  EvalVisibly(cond);
  return met;
}
bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond, Duration timeout) {
  static const auto real =
      Lookup<MuCondDurFn>("N", "5Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  const bool met = Quietly(real, this, cond, timeout);
  Acquire(this);
  EvalVisibly(cond);
  return met;
}
bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, Time deadline) {
  static const auto real =
      Lookup<MuCondTimeFn>("N", "5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  const bool met = Quietly(real, this, cond, deadline);
  Acquire(this);
  EvalVisibly(cond);
  return met;
}
// Await gives the lock up while it waits and holds it again when it returns.
void Mutex::Await(const Condition& cond) {
  static const auto real = Lookup<MuCondFn>("N", "5Mutex5AwaitERKNS0_9ConditionE");
  Release(this);
  Quietly(real, this, cond);
  Acquire(this);
  EvalVisibly(cond);
}
bool Mutex::AwaitWithTimeout(const Condition& cond, Duration timeout) {
  static const auto real =
      Lookup<MuCondDurFn>("N", "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Release(this);
  const bool met = Quietly(real, this, cond, timeout);
  Acquire(this);
  EvalVisibly(cond);
  return met;
}
bool Mutex::AwaitWithDeadline(const Condition& cond, Time deadline) {
  static const auto real =
      Lookup<MuCondTimeFn>("N", "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Release(this);
  const bool met = Quietly(real, this, cond, deadline);
  Acquire(this);
  EvalVisibly(cond);
  return met;
}

void CondVar::Wait(Mutex* mu) {
  static const auto real = Lookup<CvWaitFn>("N", "7CondVar4WaitEPNS0_5MutexE");
  Release(mu);
  Quietly(real, this, mu);
  Acquire(mu);
}
bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  static const auto real =
      Lookup<CvDurFn>("N", "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  Release(mu);
  const bool timed_out = Quietly(real, this, mu, timeout);
  Acquire(mu);
  return timed_out;
}
bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  static const auto real =
      Lookup<CvTimeFn>("N", "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  Release(mu);
  const bool timed_out = Quietly(real, this, mu, deadline);
  Acquire(mu);
  return timed_out;
}

void Notification::Notify() {
  static const auto real = Lookup<NoteFn>("N", "12Notification6NotifyEv");
  Release(this);
  Quietly(real, this);
}
void Notification::WaitForNotification() const {
  static const auto real = Lookup<NoteWaitFn>("NK", "12Notification19WaitForNotificationEv");
  Quietly(real, this);
  Acquire(this);
}
bool Notification::WaitForNotificationWithTimeout(Duration timeout) const {
  static const auto real =
      Lookup<NoteDurFn>("NK", "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE");
  const bool notified = Quietly(real, this, timeout);
  if (notified) Acquire(this);
  return notified;
}
bool Notification::WaitForNotificationWithDeadline(Time deadline) const {
  static const auto real =
      Lookup<NoteTimeFn>("NK", "12Notification31WaitForNotificationWithDeadlineENS0_4TimeE");
  const bool notified = Quietly(real, this, deadline);
  if (notified) Acquire(this);
  return notified;
}

ABSL_NAMESPACE_END
}  // namespace absl
