// Test helper: a child process (the real ternps binaries), its stdout and stderr appended to a log
// file, killed (SIGKILL) and reaped on destruction unless waited for; and reading a file whole.
//
//   ChildProcess shard({bin + "/ternps-server", "--listen=127.0.0.1:0"}, dir + "/shard.log");
//   int status = shard.Wait();  // the raw wait status
#ifndef TERNPS_TESTS_WORKER_CHILD_PROCESS_H_
#define TERNPS_TESTS_WORKER_CHILD_PROCESS_H_

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

extern char** environ;

namespace ternps::testing {

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline std::string ExitString(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exit ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("signal ", WTERMSIG(status));
  return absl::StrCat("status ", status);
}

class ChildProcess {
 public:
  // args[0] is a path, or a program name looked up in PATH.
  ChildProcess(const std::vector<std::string>& args, const std::string& log) {
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    EXPECT_EQ(posix_spawnp(&pid_, argv[0], &actions, nullptr, argv.data(), environ), 0)
        << "cannot start " << args[0];
    posix_spawn_file_actions_destroy(&actions);
  }
  ~ChildProcess() {
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      Wait();
    }
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  pid_t pid() const { return pid_; }
  // The raw wait status.
  int Wait() {
    int status = 0;
    if (!reaped_) {
      waitpid(pid_, &status, 0);
      status_ = status;
      reaped_ = true;
    }
    return status_;
  }
  // Whether it has exited (reaping it), without blocking.
  bool Exited() {
    if (reaped_) return true;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) != pid_) return false;
    status_ = status;
    reaped_ = true;
    return true;
  }

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

}  // namespace ternps::testing

#endif  // TERNPS_TESTS_WORKER_CHILD_PROCESS_H_
