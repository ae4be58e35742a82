#ifndef AGENTRY_GUEST_SUPPORT_H
#define AGENTRY_GUEST_SUPPORT_H

/* System calls the guest agent needs that Swift's Glibc module does not expose. */

/* pipe2(fds, O_CLOEXEC). */
int agentry_pipe_cloexec(int fds[2]);

/* Powers the machine off (reboot(RB_POWER_OFF)); only PID 1 may. */
int agentry_power_off(void);

/* posix_spawn_file_actions_addchdir_np: the child starts in `path`. */
#include <spawn.h>
int agentry_spawn_chdir(posix_spawn_file_actions_t *actions, const char *path);

/* posix_spawn_file_actions_addclosefrom_np: the child closes every descriptor from `low` up. */
int agentry_spawn_closefrom(posix_spawn_file_actions_t *actions, int low);

/* The host's time-stamp counter (for telling a TCG guest its TSC frequency). */
unsigned long long agentry_rdtsc(void);

#endif
