#ifndef AGENTRY_GUEST_SUPPORT_H
#define AGENTRY_GUEST_SUPPORT_H

/* System calls the guest agent needs that Swift's Glibc module does not expose. */

/* pipe2(fds, O_CLOEXEC). */
int agentry_pipe_cloexec(int fds[2]);

/* An anonymous in-memory file (memfd_create, close-on-exec): a command's standard input that
   never blocks the writer. */
int agentry_memfd(void);

/* A new pseudo-terminal of `rows` by `columns`: returns its master (close-on-exec, non-blocking)
   and writes its terminal's path into `name`; -1 on failure (errno set). */
int agentry_open_terminal(char *name, unsigned long size, int rows, int columns);

/* Sets the size of the terminal whose master is `master`. */
int agentry_resize_terminal(int master, int rows, int columns);

/* Powers the machine off (reboot(RB_POWER_OFF)); only PID 1 may. */
int agentry_power_off(void);

/* posix_spawn_file_actions_addchdir_np: the child starts in `path`. */
#include <spawn.h>
int agentry_spawn_chdir(posix_spawn_file_actions_t *actions, const char *path);

/* posix_spawn_file_actions_addclosefrom_np: the child closes every descriptor from `low` up. */
int agentry_spawn_closefrom(posix_spawn_file_actions_t *actions, int low);

/* The host's time-stamp counter (for telling a TCG guest its TSC frequency). */
unsigned long long agentry_rdtsc(void);

/* mount(2). */
int agentry_mount(const char *source, const char *target, const char *type, unsigned long flags, const char *data);

/* Loads a kernel module from an open file (finit_module(2)). */
int agentry_finit_module(int fd);

/* Makes `newroot` (a mount point) the root: chdir, move it onto /, chroot. */
int agentry_switch_root(const char *newroot);

/* mallopt(M_TOP_PAD, bytes): the heap grows (and keeps, when trimmed) `bytes` more at a time. */
int agentry_heap_top_pad(int bytes);

/* Names the calling thread (15 bytes at most), as `top -H` and perf show it. */
int agentry_name_thread(const char *name);

/* The nice of the calling thread (a thread's own, on Linux; a new thread starts with its
   creator's), of the process's main thread, and a change of the calling thread's (lowering it
   needs CAP_SYS_NICE). */
int agentry_thread_nice(void);
int agentry_process_nice(void);
int agentry_set_thread_nice(int nice);

/* mount --move. */
int agentry_move_mount(const char *from, const char *to);

#endif
