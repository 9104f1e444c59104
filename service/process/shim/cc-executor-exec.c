/*
 * cc-executor-exec: the few steps between the server's spawn and the user's
 * program, done in C so that no interpreter starts on every spawn.
 *
 *   cc-executor-exec PROCS ERRFD GATE NICE PARENT CWD PATH ARGV0 [ARG...]
 *
 * The server starts it with posix_spawn (a vfork, from its event loop), which
 * closes nothing: the shim first marks every descriptor above 2 close-on-exec,
 * so the program inherits only stdin, stdout and stderr.
 *
 * Where PROCS is "-" (no cgroup), or the cgroup.procs file of the execution's
 * leaf cgroup (which it joins first), it runs the user's program itself:
 *
 * 1. Arms the parent-death signal (SIGKILL when the spawning server thread
 *    ends), then exits if the parent PARENT is already gone; changes to the
 *    directory CWD ("-": stays in the server's).
 * 2. Lowers its priority by NICE (0: unchanged), and that of its session's
 *    autogroup: the server starts every execution in a new session, and
 *    with autogroup scheduling each session competes as one entity whatever
 *    its members' nice, so the process nice alone would change nothing.
 * 3. Where GATE is a file descriptor (not "-"), holds until the server
 *    writes one byte to it: the server spawns while the execution's first
 *    row is being committed, and nothing of the client's program may run
 *    before that commit landed. EOF (the server closed it, or died) means
 *    the execution was refused: it exits 127 with ECANCELED, having run
 *    nothing of the client's. While held it is already in its leaf and
 *    carries the execution's marker, so restart recovery finds it.
 * 4. execv(PATH, [ARGV0, ARG...]): the file the server checked, with the
 *    argv[0] the client sent; no PATH lookup.
 *
 * Where PROCS is "@" and the leaf cgroup's directory, the user's program is
 * *born* in the leaf: clone3(CLONE_INTO_CGROUP) creates it there, and CLONE_PARENT makes it the server's own child (a sibling of the
 * shim). Moving a running process instead (writing to cgroup.procs) takes the
 * kernel's global threadgroup lock for writing, which waits for an RCU grace
 * period whenever no migration happened in the last few milliseconds: 10 to
 * 20 ms for the first execute after a pause, against well under 1 ms here.
 * The shim exits at once (nothing waits on it: on a busy machine every
 * wake-up costs milliseconds); the new child reports its pid, starts its own
 * session and takes steps 1 to 4. Where clone3 is refused (a kernel without
 * it or without CLONE_INTO_CGROUP, a seccomp filter, a limit), the shim
 * reports its own pid, joins the leaf through cgroup.procs and takes steps 1
 * to 4 itself.
 *
 * The report on ERRFD (close-on-exec, so EOF means every writer exec'd or
 * exited), in native ints. Without "@": nothing when the program was exec'd,
 * errno (exit 127) when not. With "@": the program's pid (0: none was
 * started), then errno when it could not be exec'd (it exits 127 and the
 * server reaps it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <linux/close_range.h>
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

/* Step 3: 0 once the server opened GATE (-1: no gate), -1 with errno set when
 * it closed it instead. */
static int pass_gate(int gate) {
    if (gate < 0)
        return 0;
    char go;
    ssize_t got;
    do
        got = read(gate, &go, 1);
    while (got < 0 && errno == EINTR);
    if (got != 1) {
        errno = ECANCELED;
        return -1;
    }
    close(gate);
    return 0;
}

/* Every descriptor above 2 close-on-exec (posix_spawn leaves the server's
 * inheritable ones open, where Popen closed them); 0 or -1 with errno set. */
static int cloexec_from_3(void) {
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
        return 0;
    /* A kernel before 5.11: one by one. */
    DIR *fds = opendir("/proc/self/fd");
    if (fds == NULL)
        return -1;
    struct dirent *entry;
    while ((entry = readdir(fds)) != NULL) {
        int fd = atoi(entry->d_name);
        if (fd > 2 && fd != dirfd(fds))
            fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    closedir(fds);
    return 0;
}

/* Steps 1 to 4; returns only on failure, with errno set. */
static void become(pid_t parent, int nice_by, int gate, char *cwd, char *path, char **argv) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
        return;
    if (getppid() != parent) {
        errno = ESRCH;
        return;
    }
    if (strcmp(cwd, "-") != 0 && chdir(cwd) != 0)
        return;
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
    if (pass_gate(gate) != 0)
        return;
    execv(path, argv);
}

/* Report PID (the program's leader) first: "@" mode's report starts with it. */
static void report_pid(int errfd, pid_t pid) {
    int value = (int)pid;
    if (write(errfd, &value, sizeof value) != (ssize_t)sizeof value)
        _exit(127); /* the server sees a short report and refuses */
}

/* Clone the program into the cgroup directory CGROUP_FD as the server's
 * child. The shim exits at once; the child reports its pid, then its errno
 * if it cannot exec. Returns -1 with errno set when clone3 cannot do it
 * (nothing started). */
static int clone_into(int cgroup_fd, int errfd, int gate, pid_t parent, int nice_by,
                      char *cwd, char *path, char **argv) {
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_INTO_CGROUP | CLONE_PARENT;
    /* 0: with CLONE_PARENT the kernel takes the shim's own (SIGCHLD). */
    args.exit_signal = 0;
    args.cgroup = (uint64_t)cgroup_fd;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid < 0)
        return -1;
    if (pid > 0)
        _exit(0); /* its copy of ERRFD closes; the child's at its exec */
    report_pid(errfd, getpid());
    if (setsid() >= 0)
        become(parent, nice_by, gate, cwd, path, argv);
    fail(errfd);
    return -1;
}

int main(int argc, char **argv) {
    if (argc < 9) {
        static const char usage[] =
            "usage: cc-executor-exec PROCS ERRFD GATE NICE PARENT CWD PATH ARGV0 [ARG...]\n";
        ssize_t ignored = write(2, usage, sizeof usage - 1);
        (void)ignored;
        return 127;
    }
    int errfd = atoi(argv[2]);
    int gate = strcmp(argv[3], "-") == 0 ? -1 : atoi(argv[3]);
    int nice_by = atoi(argv[4]);
    pid_t parent = (pid_t)atol(argv[5]);
    char *procs = argv[1];
    /* ERRFD and GATE among them: the program must inherit neither. */
    if (cloexec_from_3() != 0) {
        if (procs[0] == '@')
            report_pid(errfd, 0); /* no program was started */
        fail(errfd);
    }
    if (procs[0] == '@') {
        /* @DIR: the leaf's directory, to clone the program into. */
        int dir = open(procs + 1, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir < 0) {
            report_pid(errfd, 0); /* no program was started */
            fail(errfd);
        }
        clone_into(dir, errfd, gate, parent, nice_by, argv[6], argv[7], &argv[8]);
        /* clone3 refused (an older kernel, a seccomp filter answering ENOSYS or
         * EPERM, a limit): join the leaf the old way, then go on as the
         * program's leader; a leaf we cannot join fails there. */
        report_pid(errfd, getpid());
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
    become(parent, nice_by, gate, argv[6], argv[7], &argv[8]);
    fail(errfd);
    return 127;
}
