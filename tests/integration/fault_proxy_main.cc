// ternps_fault_proxy: the fault tests' TCP proxy (fault_proxy.h) as a process, for scripts
// (tests/bench/chaos.sh). Forwards 127.0.0.1:<port it prints> to TARGET and obeys one command per
// line on stdin: "reset" (every connection gets RST), "hole" (stop forwarding, connections stay
// open), "unhole", "delay MS" (each chunk forwarded MS milliseconds later; 0: none), "rate BYTES"
// (at most BYTES per second per connection; 0: no limit); it exits at end of input.
//
//   mkfifo ctl; ternps_fault_proxy 127.0.0.1:7070 <ctl >address & exec 3>ctl
//   echo reset >&3
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "tests/integration/fault_proxy.h"

int main(int argc, char** argv) {
  if (argc != 2 || std::strcmp(argv[1], "--help") == 0) {
    std::fprintf(stderr,
                 "usage: ternps_fault_proxy 127.0.0.1:PORT  (prints its own address; commands on "
                 "stdin: reset | hole | unhole | delay MS | rate BYTES_PER_SECOND)\n");
    return argc == 2 ? 0 : 2;
  }
  ternps::testing::FaultProxy proxy(argv[1]);
  std::printf("%s\n", proxy.address().c_str());
  std::fflush(stdout);
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line == "reset") {
      proxy.ResetAll();
    } else if (line == "hole") {
      proxy.SetBlackHole(true);
    } else if (line == "unhole") {
      proxy.SetBlackHole(false);
    } else if (line.rfind("delay ", 0) == 0 || line.rfind("rate ", 0) == 0) {
      const bool delay = line[0] == 'd';
      char* end = nullptr;
      const char* number = line.c_str() + (delay ? 6 : 5);
      const unsigned long long value = std::strtoull(number, &end, 10);
      if (end == number || *end != '\0') {
        std::fprintf(stderr, "ternps_fault_proxy: '%s': expected a whole number\n", line.c_str());
      } else if (delay) {
        proxy.SetDelay(absl::Milliseconds(static_cast<int64_t>(value)));
      } else {
        proxy.SetRate(value);
      }
    } else if (!line.empty()) {
      std::fprintf(stderr, "ternps_fault_proxy: unknown command '%s'\n", line.c_str());
    }
  }
  return 0;
}
