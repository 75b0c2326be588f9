/* Jobs born in their cgroup, started while the last one still execs: the keeper's
   spawn (launch/keeper.py, class Births).

   - In its cgroup: clone3(CLONE_INTO_CGROUP) places the child in the job's group as it is
     created. Without it the keeper moved itself into the group, spawned, and moved back:
     two migrations a job, each taking the kernel's cgroup_threadgroup_rwsem for writing
     (every fork and exit on the machine waits meanwhile).
   - Not waiting for the exec: posix_spawn (vfork) holds the parent until the child has
     exec'd, most of a spawn's time; here the child shares the keeper's memory (CLONE_VM)
     but not its wait, so the keeper prepares and starts the next job while this one
     execs on another core. How the exec went comes back on a pipe that the exec closes
     (CLOEXEC), or that carries the step that failed and its errno (zs_started).

   The child runs on a stack of its own, in memory the keeper leaves alone until
   zs_started has read the report, and makes raw system calls only: it shares the
   keeper's memory, errno included, while the keeper runs on. It starts with every
   signal blocked, sets each handler back to the default before it unblocks them (the
   keeper's would run in the keeper's memory), and does what posix_spawn did for the
   keeper: a session of its own, /dev/null as stdin, the log as stdout and stderr, the
   working directory, the exec.

   Built by `make` (a shared library loaded with ctypes: the keeper imports nothing of
   zephserver and needs no Python headers); where it is not built, or the kernel or the
   architecture lacks clone3, the keeper spawns and migrates as before. x86-64 only. */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

#define CHILD_STACK (64 * 1024)
#define KERNEL_SIGSET 8  /* bytes of the kernel's sigset_t on x86-64 */

struct kernel_sigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    uint64_t mask;
};

/* A child's request; in one mapping with its stack (below it), which the keeper frees
   once it has read how the exec went. */
struct birth {
    const char *path;
    char *const *argv;
    char *const *envp;
    const char *cwd;
    int log_fd;
    int report_fd;      /* the pipe's write end: closed by the exec, or given the failure */
    uint64_t defaults;  /* signals the program gets at their default, ignored or not */
    uint64_t mask;      /* the keeper's: the program starts with it */
};

enum { AT_SIGNALS = 1, AT_SESSION, AT_STDIN, AT_LOG, AT_CWD, AT_EXEC };

/* What the keeper checks before it calls anything here (Births.ABI): a library built
   from another version of this file (a checkout updated without `make`) is not used. */
int zs_abi(void)
{
    return 2;
}

#if defined(__x86_64__)
static long sys4(long n, long a, long b, long c, long d)
{
    register long rax __asm__("rax") = n;
    register long rdi __asm__("rdi") = a;
    register long rsi __asm__("rsi") = b;
    register long rdx __asm__("rdx") = c;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall"
                     : "+r"(rax)
                     : "r"(rdi), "r"(rsi), "r"(rdx), "r"(r10)
                     : "rcx", "r11", "memory");
    return rax;
}

static void fail(struct birth *b, int step, long error)
{
    int report[2] = {step, (int)-error};
    sys4(SYS_write, b->report_fd, (long)report, sizeof report, 0);
    sys4(SYS_exit, 127, 0, 0, 0);
}

static int child(void *arg)
{
    struct birth *b = arg;
    struct kernel_sigaction dfl = {0}, old;
    for (int sig = 1; sig <= 64; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        if (sys4(SYS_rt_sigaction, sig, 0, (long)&old, KERNEL_SIGSET) != 0)
            continue;
        int handled = old.handler != SIG_DFL && old.handler != SIG_IGN;
        if (handled || (b->defaults >> (sig - 1) & 1))
            sys4(SYS_rt_sigaction, sig, (long)&dfl, 0, KERNEL_SIGSET);
    }
    long r = sys4(SYS_rt_sigprocmask, SIG_SETMASK, (long)&b->mask, 0, KERNEL_SIGSET);
    if (r < 0)
        fail(b, AT_SIGNALS, r);
    if ((r = sys4(SYS_setsid, 0, 0, 0, 0)) < 0)
        fail(b, AT_SESSION, r);
    long null = sys4(SYS_openat, AT_FDCWD, (long)"/dev/null", O_RDONLY, 0);
    if (null < 0)
        fail(b, AT_STDIN, null);
    if (null != 0 && ((r = sys4(SYS_dup2, null, 0, 0, 0)) < 0 ||
                      (r = sys4(SYS_close, null, 0, 0, 0)) < 0))
        fail(b, AT_STDIN, r);
    if ((r = sys4(SYS_dup2, b->log_fd, 1, 0, 0)) < 0 ||
        (r = sys4(SYS_dup2, b->log_fd, 2, 0, 0)) < 0)
        fail(b, AT_LOG, r);
    if ((r = sys4(SYS_chdir, (long)b->cwd, 0, 0, 0)) < 0)
        fail(b, AT_CWD, r);
    r = sys4(SYS_execve, (long)b->path, (long)b->argv, (long)b->envp, 0);
    fail(b, AT_EXEC, r);
    return 127;
}

/* clone3 with the child running fn(arg) on its own stack, then exiting: no C frame of
   the parent's is ever returned to in the child. */
static long clone3_run(struct clone_args *args, int (*fn)(void *), void *arg)
{
    register long rax __asm__("rax") = SYS_clone3;
    register long rdi __asm__("rdi") = (long)args;
    register long rsi __asm__("rsi") = sizeof *args;
    register long r12 __asm__("r12") = (long)fn;
    register long r13 __asm__("r13") = (long)arg;
    __asm__ volatile(
        "syscall\n\t"
        "test %%rax, %%rax\n\t"
        "jnz 1f\n\t"
        "xor %%ebp, %%ebp\n\t"
        "mov %%r13, %%rdi\n\t"
        "call *%%r12\n\t"
        "mov %%eax, %%edi\n\t"
        "mov $60, %%eax\n\t"  /* exit */
        "syscall\n\t"
        "hlt\n\t"
        "1:\n\t"
        : "+r"(rax)
        : "r"(rdi), "r"(rsi), "r"(r12), "r"(r13)
        : "rcx", "r11", "memory");
    return rax;
}
#endif

/* Start path (argv, envp) in cwd, in the cgroup open as cgroup_fd (a directory), its
   output to log_fd, the signals of the bit mask defaults (bit N-1: signal N) at their
   default. The child's pid, with *report (the pipe to read its exec's outcome from) and
   *handle (what zs_started frees); or -errno where clone3 itself failed (ENOSYS, EPERM:
   the keeper migrates instead; others: the cgroup's). argv, envp and the strings must
   stay as they are until zs_started. */
long zs_start(int cgroup_fd, const char *path, char *const argv[], char *const envp[],
              const char *cwd, int log_fd, uint64_t defaults, int *report, void **handle)
{
#if defined(__x86_64__)
    size_t size = sizeof(struct birth) + CHILD_STACK;
    char *block = mmap(NULL, size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (block == MAP_FAILED)
        return -errno;
    struct birth *b = (struct birth *)(block + CHILD_STACK);  /* (above the stack) */
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        long error = -errno;
        munmap(block, size);
        return error;
    }
    *b = (struct birth){.path = path, .argv = argv, .envp = envp, .cwd = cwd,
                        .log_fd = log_fd, .report_fd = fds[1], .defaults = defaults};
    sigset_t all, keepers;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &keepers);
    memcpy(&b->mask, &keepers, sizeof b->mask);
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_VM | CLONE_INTO_CGROUP;
    args.exit_signal = SIGCHLD;
    /* (its top 16-byte aligned, as the ABI wants at the child's first call) */
    args.stack = (uint64_t)(uintptr_t)block;
    args.stack_size = CHILD_STACK;
    args.cgroup = (uint64_t)cgroup_fd;
    long pid = clone3_run(&args, child, b);
    pthread_sigmask(SIG_SETMASK, &keepers, NULL);
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        munmap(block, size);
        return pid;  /* (the raw syscall's -errno) */
    }
    *report = fds[0];
    *handle = block;
    return pid;
#else
    (void)cgroup_fd; (void)path; (void)argv; (void)envp; (void)cwd; (void)log_fd;
    (void)defaults; (void)report; (void)handle;
    return -ENOSYS;
#endif
}

/* How the exec of child pid, which zs_start started, went: 0 (it runs the program, or
   was killed before), or the step that failed (its errno in *error; the child, which
   exits at once, is reaped here: it is nobody's job). Waits for the exec. Frees what
   zs_start took. */
int zs_started(long pid, int report, void *handle, int *error)
{
    int got[2] = {0, 0};
    size_t have = 0;
    while (have < sizeof got) {
        ssize_t n = read(report, (char *)got + have, sizeof got - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        have += (size_t)n;
    }
    close(report);
    if (have == sizeof got) {  /* (reaped before its stack goes: it still runs on it) */
        while (waitpid((pid_t)pid, NULL, __WALL) < 0 && errno == EINTR)
            ;
    }
    munmap(handle, sizeof(struct birth) + CHILD_STACK);
    if (have < sizeof got)
        return 0;  /* closed by the exec */
    *error = got[1];
    return got[0];
}
