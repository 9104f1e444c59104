/*
 * cc-executor-exec: the few steps between the server's spawn and the user's
 * program, done in C so that no interpreter starts on every spawn.
 *
 *   cc-executor-exec PROCS ERRFD NICE PARENT PATH ARGV0 [ARG...]
 *
 * 1. Arms the parent-death signal (SIGKILL when the spawning server thread
 *    ends), then exits if the parent PARENT is already gone.
 * 2. Joins the cgroup whose cgroup.procs file is PROCS ("-": none), so no
 *    user code ever runs outside it.
 * 3. Lowers its priority by NICE (0: unchanged), and that of its session's
 *    autogroup: the server starts every execution in a new session, and
 *    with autogroup scheduling each session competes as one entity whatever
 *    its members' nice, so the process nice alone would change nothing.
 * 4. execv(PATH, [ARGV0, ARG...]): the file the server checked, with the
 *    argv[0] the client sent; no PATH lookup.
 *
 * On any failure it writes errno (a native int) to ERRFD and exits 127; the
 * fd is close-on-exec, so a successful exec shows as EOF to the server.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

static void fail(int errfd) {
    int err = errno;
    ssize_t ignored = write(errfd, &err, sizeof err);
    (void)ignored;
    _exit(127);
}

int main(int argc, char **argv) {
    if (argc < 7) {
        static const char usage[] =
            "usage: cc-executor-exec PROCS ERRFD NICE PARENT PATH ARGV0 [ARG...]\n";
        ssize_t ignored = write(2, usage, sizeof usage - 1);
        (void)ignored;
        return 127;
    }
    int errfd = atoi(argv[2]);
    int nice_by = atoi(argv[3]);
    pid_t parent = (pid_t)atol(argv[4]);
    if (fcntl(errfd, F_SETFD, FD_CLOEXEC) != 0)
        return 127;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
        fail(errfd);
    if (getppid() != parent) {
        errno = ESRCH;
        fail(errfd);
    }
    if (strcmp(argv[1], "-") != 0) {
        int fd = open(argv[1], O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            fail(errfd);
        if (write(fd, "0", 1) != 1)
            fail(errfd);
        close(fd);
    }
    if (nice_by > 0) {
        if (setpriority(PRIO_PROCESS, 0, nice_by) != 0)
            fail(errfd);
        /* Absent without CONFIG_SCHED_AUTOGROUP: the process nice is enough then. */
        int fd = open("/proc/self/autogroup", O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            char text[8];
            int len = snprintf(text, sizeof text, "%d", nice_by);
            ssize_t ignored = write(fd, text, (size_t)len);
            (void)ignored;
            close(fd);
        }
    }
    execv(argv[5], &argv[6]);
    fail(errfd);
    return 127;
}
