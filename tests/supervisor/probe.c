/* A static probe run inside a container by tests/e2e_supervisor.rs: it tries to reach the
 * processes of sifr (given by host pid) and every process it can see in /proc, and prints
 * one "REACHED <pid> <how>" line for each way that works. It never writes to a process.
 *
 * Usage: probe DIR — creates DIR/started, waits for DIR/pids:
 *   line 1: "<st_dev> <st_ino>" of the host's root directory
 *   line 2: host pids of sifr's processes (sifr, supervisor, helpers), space separated
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

static unsigned long long host_dev, host_ino;
static int reached;

static void hit(long pid, const char *how) {
    printf("REACHED %ld %s\n", pid, how);
    reached++;
}

static int same_as_host_root(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 && (unsigned long long)st.st_dev == host_dev &&
           (unsigned long long)st.st_ino == host_ino;
}

/* Reads through /proc/PID: mem, root, cwd, fd/, environ, ns/mnt. */
static void proc_checks(long pid) {
    char p[256];
    int fd;
    snprintf(p, sizeof p, "/proc/%ld/mem", pid);
    if ((fd = open(p, O_RDWR | O_CLOEXEC)) >= 0) { hit(pid, "open mem for writing"); close(fd); }
    snprintf(p, sizeof p, "/proc/%ld/root/", pid);
    if ((fd = open(p, O_PATH | O_DIRECTORY | O_CLOEXEC)) >= 0) {
        if (same_as_host_root(fd)) hit(pid, "root is the host's root");
        close(fd);
    }
    snprintf(p, sizeof p, "/proc/%ld/root/oldroot", pid);
    if ((fd = open(p, O_PATH | O_CLOEXEC)) >= 0) { hit(pid, "root/oldroot"); close(fd); }
    snprintf(p, sizeof p, "/proc/%ld/cwd/", pid);
    if ((fd = open(p, O_PATH | O_DIRECTORY | O_CLOEXEC)) >= 0) {
        if (same_as_host_root(fd)) hit(pid, "cwd is the host's root");
        close(fd);
    }
    snprintf(p, sizeof p, "/proc/%ld/environ", pid);
    if ((fd = open(p, O_RDONLY | O_CLOEXEC)) >= 0) { hit(pid, "environ"); close(fd); }
    snprintf(p, sizeof p, "/proc/%ld/ns/mnt", pid);
    if ((fd = open(p, O_RDONLY | O_CLOEXEC)) >= 0) { hit(pid, "ns/mnt"); close(fd); }
    snprintf(p, sizeof p, "/proc/%ld/fd", pid);
    DIR *d = opendir(p);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char q[512];
            snprintf(q, sizeof q, "/proc/%ld/fd/%s", pid, e->d_name);
            if ((fd = open(q, O_PATH | O_CLOEXEC)) >= 0) { hit(pid, "fd/N opened"); close(fd); break; }
        }
        hit(pid, "fd/ listed");
        closedir(d);
    }
}

/* ptrace, pidfd_getfd and signals: for sifr's own processes and the container's init. */
static void process_checks(long pid, int signals) {
    if (ptrace(PTRACE_SEIZE, pid, 0, 0) == 0) {
        hit(pid, "ptrace seize");
        ptrace(PTRACE_INTERRUPT, pid, 0, 0);
        waitpid(pid, NULL, __WALL);
        ptrace(PTRACE_DETACH, pid, 0, 0);
    } else if (ptrace(PTRACE_ATTACH, pid, 0, 0) == 0) {
        hit(pid, "ptrace attach");
        waitpid(pid, NULL, __WALL);
        ptrace(PTRACE_DETACH, pid, 0, 0);
    }
    int pfd = syscall(SYS_pidfd_open, pid, 0);
    if (pfd >= 0) {
        for (int n = 0; n < 64; n++) {
            int fd = syscall(SYS_pidfd_getfd, pfd, n, 0);
            if (fd >= 0) { hit(pid, "pidfd_getfd"); close(fd); break; }
        }
        close(pfd);
    }
    if (signals) {
        if (kill(pid, 0) == 0) hit(pid, "kill 0");
        /* Only when signal 0 is refused: a stop that worked would hang the test. */
        else if (kill(pid, SIGSTOP) == 0) { hit(pid, "kill SIGSTOP"); kill(pid, SIGCONT); }
    }
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    char p[4096];
    snprintf(p, sizeof p, "%s/started", argv[1]);
    int fd = open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) { perror(p); return 2; }
    close(fd);
    snprintf(p, sizeof p, "%s/pids", argv[1]);
    FILE *f = NULL;
    for (int i = 0; i < 600 && !(f = fopen(p, "r")); i++) usleep(50000);
    if (!f) { fprintf(stderr, "probe: no %s\n", p); return 2; }
    if (fscanf(f, "%llu %llu", &host_dev, &host_ino) != 2) return 2;
    long sifr[64];
    int n = 0;
    while (n < 64 && fscanf(f, "%ld", &sifr[n]) == 1) n++;
    fclose(f);
    long self = getpid();
    for (int i = 0; i < n; i++) {
        printf("target %ld\n", sifr[i]);
        proc_checks(sifr[i]);
        process_checks(sifr[i], 1);
    }
    /* Everything visible in /proc: nothing may lead to the host's root. */
    int seen = 0;
    DIR *d = opendir("/proc");
    if (!d) { perror("/proc"); return 2; }
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0 || pid == self) continue;
        seen++;
        proc_checks(pid);
        if (pid == 1) process_checks(pid, 0);
    }
    closedir(d);
    fd = open("/proc/self/root/oldroot", O_PATH | O_CLOEXEC);
    if (fd >= 0) { hit(self, "own root has /oldroot"); close(fd); }
    printf("DONE targets=%d visible=%d reached=%d\n", n, seen, reached);
    return 0;
}
