/* A job born in its cgroup: clone3(CLONE_INTO_CGROUP), for the keeper (launch/keeper.py).

   Without it the keeper moves itself into the job's group, spawns, and moves back: two
   migrations a job, each taking the kernel's cgroup_threadgroup_rwsem for writing (every
   fork and exit on the machine waits meanwhile, and a first one after a quiet spell waits
   for an RCU grace period). clone3 places the child in the group as it is created,
   under the lock's read side, as a fork does anyway; and it has no moment outside the
   group, where the keeper's own migrations had none only because the keeper is
   single-threaded.

   The child shares the keeper's memory until it execs (CLONE_VM | CLONE_VFORK, as
   posix_spawn does): it runs on a stack of its own, with every signal blocked until it
   has set each handler back to the default, and touches nothing of the keeper's but
   its request. What posix_spawn did for the keeper is done here: a session of its own,
   /dev/null as stdin, the log as stdout and stderr, the working directory, the exec.

   Built by `make` (a shared library loaded with ctypes: the keeper imports nothing of
   zephserver, and needs no Python headers); where it is not built, or the kernel or the
   architecture lacks clone3, the keeper migrates as before. x86-64 only. */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

#define CHILD_STACK (64 * 1024)

struct birth {
    const char *path;
    char *const *argv;
    char *const *envp;
    const char *cwd;
    int log_fd;
    sigset_t defaults;  /* signals the program gets at their default, ignored or not */
    sigset_t mask;    /* the keeper's: the program starts with it */
    int failed_at;    /* 0: exec'd; else the step that failed (its errno in error) */
    int error;
};

enum { AT_SIGNALS = 1, AT_SESSION, AT_STDIN, AT_LOG, AT_CWD, AT_EXEC };

static int child(void *arg)
{
    struct birth *b = arg;
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    /* Every handler back to the default (the keeper's would run here, in its memory),
       and those asked for, ignored or not; another ignored signal stays ignored across
       the exec, as with posix_spawn's POSIX_SPAWN_SETSIGDEF. */
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction old;
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        if (sigaction(sig, NULL, &old) != 0)
            continue;  /* (the signals glibc keeps for itself) */
        int handled = (old.sa_flags & SA_SIGINFO) ||
                      (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN);
        if (handled || sigismember(&b->defaults, sig) == 1)
            sigaction(sig, &dfl, NULL);
    }
    if (sigprocmask(SIG_SETMASK, &b->mask, NULL) != 0) {
        b->failed_at = AT_SIGNALS;
        goto failed;
    }
    if (setsid() < 0) {
        b->failed_at = AT_SESSION;
        goto failed;
    }
    int null = open("/dev/null", O_RDONLY);
    if (null < 0 || (null != 0 && (dup2(null, 0) < 0 || close(null) < 0))) {
        b->failed_at = AT_STDIN;
        goto failed;
    }
    if (dup2(b->log_fd, 1) < 0 || dup2(b->log_fd, 2) < 0) {
        b->failed_at = AT_LOG;
        goto failed;
    }
    if (chdir(b->cwd) != 0) {
        b->failed_at = AT_CWD;
        goto failed;
    }
    execve(b->path, b->argv, b->envp);
    b->failed_at = AT_EXEC;
failed:
    b->error = errno;
    syscall(SYS_exit, 127);
    return 127;
}

#if defined(__x86_64__)
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

static _Alignas(16) char child_stack[CHILD_STACK];  /* (the keeper spawns one at a time) */

/* Start path (argv, envp) in cwd, in the cgroup open as cgroup_fd (a directory), its
   output to log_fd, the ndefaults signals of defaults at their default. The child's
   pid; or -errno where nothing started, the step that failed in *failed_at (0: clone3
   itself: ENOSYS, EPERM... where the keeper migrates instead). */
long zs_spawn_into(int cgroup_fd, const char *path, char *const argv[], char *const envp[],
                   const char *cwd, int log_fd, const int *defaults, int ndefaults,
                   int *failed_at)
{
#if defined(__x86_64__)
    struct birth b = {.path = path, .argv = argv, .envp = envp, .cwd = cwd,
                      .log_fd = log_fd, .failed_at = 0, .error = 0};
    sigemptyset(&b.defaults);
    for (int i = 0; i < ndefaults; i++)
        sigaddset(&b.defaults, defaults[i]);
    sigset_t all;
    sigfillset(&all);
    if (pthread_sigmask(SIG_SETMASK, &all, &b.mask) != 0) {
        *failed_at = 0;
        return -EINVAL;
    }
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP;
    args.exit_signal = SIGCHLD;
    args.stack = (uint64_t)(uintptr_t)child_stack;
    args.stack_size = sizeof child_stack;
    args.cgroup = (uint64_t)cgroup_fd;
    long pid = clone3_run(&args, child, &b);
    pthread_sigmask(SIG_SETMASK, &b.mask, NULL);
    if (pid < 0) {
        *failed_at = 0;
        return pid;  /* (the raw syscall's -errno) */
    }
    if (b.failed_at) {  /* it exited: reaped here, it is nobody's job */
        int status;
        while (waitpid((pid_t)pid, &status, __WALL) < 0 && errno == EINTR)
            ;
        *failed_at = b.failed_at;
        return -b.error;
    }
    *failed_at = 0;
    return pid;
#else
    (void)cgroup_fd; (void)path; (void)argv; (void)envp; (void)cwd; (void)log_fd;
    (void)defaults; (void)ndefaults;
    *failed_at = 0;
    return -ENOSYS;
#endif
}
