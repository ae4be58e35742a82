#define _GNU_SOURCE
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/reboot.h>
#include <spawn.h>
#include <unistd.h>
#include <x86intrin.h>

#include "guest_support.h"

int agentry_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}

int agentry_memfd(void) {
    return (int)syscall(SYS_memfd_create, "agentry-stdin", 1u /* MFD_CLOEXEC */);
}

int agentry_open_terminal(char *name, unsigned long size, int rows, int columns) {
    int master = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    if (master < 0) master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    if (master < 0) return -1;
    if (grantpt(master) != 0 || unlockpt(master) != 0 || ptsname_r(master, name, size) != 0 ||
        agentry_resize_terminal(master, rows, columns) != 0) {
        close(master);
        return -1;
    }
    return master;
}

int agentry_resize_terminal(int master, int rows, int columns) {
    struct winsize size = {0};
    size.ws_row = (unsigned short)(rows > 0 && rows < 10000 ? rows : 24);
    size.ws_col = (unsigned short)(columns > 0 && columns < 10000 ? columns : 80);
    return ioctl(master, TIOCSWINSZ, &size);
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

int agentry_mount(const char *source, const char *target, const char *type, unsigned long flags, const char *data) {
    return mount(source, target, type, flags, data);
}

int agentry_finit_module(int fd) {
    return (int)syscall(SYS_finit_module, fd, "", 0);
}

int agentry_switch_root(const char *newroot) {
    if (chdir(newroot) != 0) return -1;
    if (mount(newroot, "/", NULL, MS_MOVE, NULL) != 0) return -1;
    if (chroot(".") != 0) return -1;
    return chdir("/");
}

int agentry_move_mount(const char *from, const char *to) {
    return mount(from, to, NULL, MS_MOVE, NULL);
}

int agentry_heap_top_pad(int bytes) {
    return mallopt(M_TOP_PAD, bytes);
}

int agentry_name_thread(const char *name) {
    return pthread_setname_np(pthread_self(), name);
}

int agentry_thread_nice(void) {
    return getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
}

int agentry_process_nice(void) {
    return getpriority(PRIO_PROCESS, (id_t)getpid());
}

int agentry_set_thread_nice(int nice) {
    return setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice);
}
