#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/reboot.h>
#include <spawn.h>
#include <unistd.h>
#include <x86intrin.h>

#include "guest_support.h"

int agentry_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}

int agentry_power_off(void) {
    return reboot(RB_POWER_OFF);
}

int agentry_spawn_chdir(posix_spawn_file_actions_t *actions, const char *path) {
    return posix_spawn_file_actions_addchdir_np(actions, path);
}

unsigned long long agentry_rdtsc(void) {
    return __rdtsc();
}

int agentry_spawn_closefrom(posix_spawn_file_actions_t *actions, int low) {
    return posix_spawn_file_actions_addclosefrom_np(actions, low);
}
