/*
 * cc-executor-exec: the few steps between the server's spawn and the user's
 * program, done in C so that no interpreter starts on every spawn.
 *
 *   cc-executor-exec PROCS ERRFD NICE PARENT PATH ARGV0 [ARG...]
 *
 * Where PROCS is "-" (no cgroup), or the cgroup.procs file of the execution's
 * leaf cgroup (which it joins first), it runs the user's program itself:
 *
 * 1. Arms the parent-death signal (SIGKILL when the spawning server thread
 *    ends), then exits if the parent PARENT is already gone.
 * 2. Lowers its priority by NICE (0: unchanged), and that of its session's
 *    autogroup: the server starts every execution in a new session, and
 *    with autogroup scheduling each session competes as one entity whatever
 *    its members' nice, so the process nice alone would change nothing.
 * 3. execv(PATH, [ARGV0, ARG...]): the file the server checked, with the
 *    argv[0] the client sent; no PATH lookup.
 *
 * Where PROCS is "@" and the leaf cgroup's directory, the user's program is
 * *born* in the leaf: clone3(CLONE_INTO_CGROUP) creates it there, and CLONE_PARENT makes it the server's own child (a sibling of the
 * shim). Moving a running process instead (writing to cgroup.procs) takes the
 * kernel's global threadgroup lock for writing, which waits for an RCU grace
 * period whenever no migration happened in the last few milliseconds: 10 to
 * 20 ms for the first execute after a pause, against well under 1 ms here.
 * The new child starts its own session, then takes steps 1 to 3; the shim
 * waits (CLONE_VFORK) until it has exec'd or failed, reports and exits. On a
 * kernel without clone3 or CLONE_INTO_CGROUP the shim joins the leaf through
 * cgroup.procs and takes steps 1 to 3 itself.
 *
 * The report on ERRFD (close-on-exec): nothing (EOF) when the shim itself
 * exec'd the program; on its own failure, errno (a native int) and exit 127;
 * after a clone, two native ints, the child's pid and errno (0: it exec'd;
 * otherwise it failed and exited 127, and the server reaps it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

static void fail(int errfd) {
    int err = errno;
    ssize_t ignored = write(errfd, &err, sizeof err);
    (void)ignored;
    _exit(127);
}

/* Steps 1 to 3; returns only on failure, with errno set. */
static void become(pid_t parent, int nice_by, char *path, char **argv) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
        return;
    if (getppid() != parent) {
        errno = ESRCH;
        return;
    }
    if (nice_by > 0) {
        if (setpriority(PRIO_PROCESS, 0, nice_by) != 0)
            return;
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
    execv(path, argv);
}

/* Clone the program into the cgroup directory CGROUP_FD as the server's
 * child; returns -1 with errno set when clone3 cannot do it (nothing started). */
static int clone_into(int cgroup_fd, int errfd, pid_t parent, int nice_by, char *path,
                      char **argv) {
    int inner[2];
    if (pipe2(inner, O_CLOEXEC) != 0)
        return -1;
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_INTO_CGROUP | CLONE_PARENT | CLONE_VFORK;
    /* 0: with CLONE_PARENT the kernel takes the shim's own (SIGCHLD). */
    args.exit_signal = 0;
    args.cgroup = (uint64_t)cgroup_fd;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0) {
        close(inner[0]);
        if (setsid() >= 0)
            become(parent, nice_by, path, argv);
        int err = errno;
        ssize_t ignored = write(inner[1], &err, sizeof err);
        (void)ignored;
        _exit(127);
    }
    int saved = errno;
    close(inner[1]);
    if (pid < 0) {
        close(inner[0]);
        errno = saved;
        return -1;
    }
    /* CLONE_VFORK: the child has exec'd (EOF) or written its errno and exited. */
    int report[2] = {(int)pid, 0};
    if (read(inner[0], &report[1], sizeof report[1]) != (ssize_t)sizeof report[1])
        report[1] = 0;
    close(inner[0]);
    if (write(errfd, report, sizeof report) != (ssize_t)sizeof report)
        _exit(126); /* the server sees a short report and refuses */
    _exit(0);
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
    char *procs = argv[1];
    if (procs[0] == '@') {
        /* @DIR: the leaf's directory, to clone the program into. */
        int dir = open(procs + 1, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir < 0)
            fail(errfd);
        clone_into(dir, errfd, parent, nice_by, argv[5], &argv[6]);
        if (errno != ENOSYS && errno != EINVAL && errno != E2BIG && errno != EOPNOTSUPP)
            fail(errfd);
        /* No clone3 or no CLONE_INTO_CGROUP here: join the leaf, then go on. */
        int fd = openat(dir, "cgroup.procs", O_WRONLY | O_CLOEXEC);
        close(dir);
        if (fd < 0 || write(fd, "0", 1) != 1)
            fail(errfd);
        close(fd);
    } else if (strcmp(procs, "-") != 0) {
        int fd = open(procs, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            fail(errfd);
        if (write(fd, "0", 1) != 1)
            fail(errfd);
        close(fd);
    }
    become(parent, nice_by, argv[5], &argv[6]);
    fail(errfd);
    return 127;
}
