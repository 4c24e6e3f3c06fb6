/*
 * capsule-launch: the capsule's root file system and its first process, for the Capsule agent (run as host root).
 *
 *   capsule-launch rootfs --lower DIR --upper DIR --work DIR --lowermnt DIR --root DIR --uid BASE --count N
 *   capsule-launch unmount --lowermnt DIR --root DIR
 *   capsule-launch run --root DIR --hostname NAME --uid BASE --count N --stdout PATH --stderr PATH --cwd DIR
 *                      [--caps oci|all] [--mask DIR]... -- CMD [ARGS...]
 *
 * rootfs: an idmapped view of --lower (uids 0..N-1 seen as BASE..BASE+N-1) at --lowermnt, and an overlay of it
 * with --upper at --root, both in the caller's mount namespace. unmount undoes that. run starts CMD as PID 1 of
 * new user, mount, PID, UTS, IPC and network namespaces, rooted at --root; it prints the capsule's host pid,
 * waits for a line "go" on stdin (meanwhile the agent sets up the network namespace), then waits for the capsule
 * and exits with its status. Errors: "capsule-launch: <what failed>: <strerror>" on stderr, exit 1 (2 for usage).
 * Build: gcc -O2 -Wall -Wextra -Werror -o capsule-launch native/capsule-launch.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/capability.h>

/* glibc 2.36 lacks wrappers (or headers) for some of these; the numbers are the same on every architecture. */
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef MOUNT_ATTR_IDMAP
#define MOUNT_ATTR_IDMAP 0x00100000
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef STATX_ATTR_MOUNT_ROOT
#define STATX_ATTR_MOUNT_ROOT 0x00002000
#endif

/* struct mount_attr, version 0 (own name: glibc's <sys/mount.h> may or may not declare it). */
struct idmap_attr {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};

static int err_fd = 2;     /* the agent's stderr; the capsule's child keeps a copy of it until exec */
static pid_t victim;       /* a child to kill before exiting on an error */

/* "capsule-launch: <what>: <strerror(errno)>", then exit 1 (after killing any child left half made). */
static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    int e = errno;
    char what[PATH_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    dprintf(err_fd, "capsule-launch: %s: %s\n", what, strerror(e));
    if (victim > 0) {
        kill(victim, SIGKILL);
        waitpid(victim, NULL, 0);
    }
    _exit(1);
}

static void usage(const char *why) __attribute__((noreturn));
static void usage(const char *why)
{
    fprintf(stderr, "capsule-launch: %s\nusage: capsule-launch rootfs --lower DIR --upper DIR --work DIR "
            "--lowermnt DIR --root DIR --uid BASE --count N\n       capsule-launch unmount --lowermnt DIR --root DIR\n"
            "       capsule-launch run --root DIR --hostname NAME --uid BASE --count N --stdout PATH --stderr PATH "
            "--cwd DIR [--caps oci|all] [--mask DIR]... -- CMD [ARGS...]\n", why);
    exit(2);
}

/* The options of every subcommand, by name; a subcommand checks that it got the ones it needs. */
struct opts {
    const char *lower, *upper, *work, *lowermnt, *root, *uid, *count, *hostname, *out, *err, *cwd, *caps;
    const char *masks[16];
    size_t nmasks;
    char **cmd;
};

static void parse(int argc, char **argv, struct opts *o)
{
    struct { const char *name; const char **val; } known[] = {
        {"--lower", &o->lower}, {"--upper", &o->upper}, {"--work", &o->work}, {"--lowermnt", &o->lowermnt},
        {"--root", &o->root}, {"--uid", &o->uid}, {"--count", &o->count}, {"--hostname", &o->hostname},
        {"--stdout", &o->out}, {"--stderr", &o->err}, {"--cwd", &o->cwd}, {"--caps", &o->caps},
    };
    for (int i = 2; i < argc; i += 2) {
        if (strcmp(argv[i], "--") == 0) {
            o->cmd = argv + i + 1;
            return;
        }
        if (strcmp(argv[i], "--mask") == 0) {
            if (i + 1 >= argc || o->nmasks == sizeof o->masks / sizeof o->masks[0]) usage("--mask: one too many");
            o->masks[o->nmasks++] = argv[i + 1];
            continue;
        }
        size_t k = 0;
        while (k < sizeof known / sizeof known[0] && strcmp(argv[i], known[k].name) != 0) k++;
        if (k == sizeof known / sizeof known[0]) usage("unknown option");
        if (i + 1 >= argc) usage("option without a value");
        *known[k].val = argv[i + 1];
    }
}

static unsigned long number(const char *s, const char *name)
{
    char *end;
    errno = 0;
    unsigned long v = s ? strtoul(s, &end, 10) : 0;
    if (!s || errno || *end || end == s || v == 0 || v > UINT32_MAX) usage(name);
    return v;
}

/* mkdir -p; returns 1 when it made the last component, 0 when that was there already. */
static int mkdir_p(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        fail("mkdir %s", path);
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, mode) && errno != EEXIST) fail("mkdir %s", buf);
        *p = '/';
    }
    if (mkdir(buf, mode) == 0) return 1;
    if (errno != EEXIST) fail("mkdir %s", buf);
    return 0;
}

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) fail("write %s", path);
    close(fd);
}

/* Maps 0..count-1 in the user namespace of pid to base.. on the host, for users and groups alike. */
static void set_id_maps(pid_t pid, unsigned long base, unsigned long count, int deny_setgroups)
{
    char path[64], map[64];
    snprintf(map, sizeof map, "0 %lu %lu\n", base, count);
    snprintf(path, sizeof path, "/proc/%d/uid_map", (int)pid);
    write_file(path, map);
    if (deny_setgroups) {
        snprintf(path, sizeof path, "/proc/%d/setgroups", (int)pid);
        write_file(path, "deny");
    }
    snprintf(path, sizeof path, "/proc/%d/gid_map", (int)pid);
    write_file(path, map);
}

static int is_mount_root(const char *path)
{
    struct statx st;
    if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &st)) {
        if (errno == ENOENT) return 0;
        fail("statx %s", path);
    }
    if (!(st.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)) {
        errno = ENOTSUP;
        fail("statx %s: no STATX_ATTR_MOUNT_ROOT", path);
    }
    return (st.stx_attributes & STATX_ATTR_MOUNT_ROOT) != 0;
}

/* A user namespace with the capsule's id mapping, only to give the idmapped mount its mapping: a child makes it,
 * and once its maps are written an fd on it keeps it alive after the child is gone. */
static int helper_userns(unsigned long base, unsigned long count)
{
    int ready[2];
    if (pipe2(ready, O_CLOEXEC)) fail("pipe");
    pid_t pid = fork();
    if (pid < 0) fail("fork");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int e = unshare(CLONE_NEWUSER) ? errno : 0;
        if (write(ready[1], &e, sizeof e) != sizeof e || e) _exit(1);
        for (;;)
            pause();
    }
    victim = pid;
    close(ready[1]);
    int e = EPIPE;
    if (read(ready[0], &e, sizeof e) != sizeof e || e) {
        errno = e;
        fail("unshare(CLONE_NEWUSER) in the helper");
    }
    close(ready[0]);
    set_id_maps(pid, base, count, 1);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("open %s", path);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    victim = 0;
    return fd;
}

/* Only the one mount at lower (not its submounts), idmapped, attached at target. */
static void mount_idmapped(const char *lower, const char *target, int userns)
{
    int fd = (int)syscall(SYS_open_tree, AT_FDCWD, lower, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (fd < 0) fail("open_tree %s", lower);
    struct idmap_attr attr = {.attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)userns};
    if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH, &attr, sizeof attr)) fail("mount_setattr idmap on %s", lower);
    if (syscall(SYS_move_mount, fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)) fail("move_mount to %s", target);
    close(fd);
}

static int cmd_rootfs(const struct opts *o)
{
    if (!o->lower || !o->upper || !o->work || !o->lowermnt || !o->root)
        usage("rootfs needs --lower --upper --work --lowermnt --root --uid --count");
    unsigned long base = number(o->uid, "bad --uid"), count = number(o->count, "bad --count");
    if (is_mount_root(o->root)) return 0;
    /* An upper that exists may come from a migration: its owner and mode stay as they are. */
    if (mkdir_p(o->upper, 0755) && (chown(o->upper, base, base) || chmod(o->upper, 0755))) fail("chown %s", o->upper);
    mkdir_p(o->work, 0700);
    mkdir_p(o->lowermnt, 0755);
    mkdir_p(o->root, 0755);
    /* The capsule's first process reaches its root through root's parent (see make_root) as one of its own
     * unprivileged ids: that folder must let it pass (0711: search only), whatever the agent's umask made it. */
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", o->root);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = '\0';
        if (chmod(parent, 0711)) fail("chmod %s", parent);
    }
    /* Left over from a rootfs that failed half way: the overlay must not stack on an older view. */
    if (is_mount_root(o->lowermnt) && umount2(o->lowermnt, MNT_DETACH)) fail("umount %s", o->lowermnt);
    int userns = helper_userns(base, count);
    mount_idmapped(o->lower, o->lowermnt, userns);
    close(userns);
    /* The upper layer may move to another host, over another lower file system: no index (file handles of this
     * lower), no metacopy (files whose data stays in this lower), no redirects (paths into this lower). */
    char opts[3 * PATH_MAX + 128];
    if (snprintf(opts, sizeof opts, "lowerdir=%s,upperdir=%s,workdir=%s,index=off,metacopy=off,redirect_dir=off",
                 o->lowermnt, o->upper, o->work) >= (int)sizeof opts) {
        errno = ENAMETOOLONG;
        fail("overlay options");
    }
    if (mount("overlay", o->root, "overlay", 0, opts)) {
        int e = errno;
        umount2(o->lowermnt, MNT_DETACH);
        errno = e;
        fail("mount overlay on %s", o->root);
    }
    return 0;
}

static void detach(const char *path)
{
    if (umount2(path, MNT_DETACH) && errno != EINVAL && errno != ENOENT) fail("umount %s", path);
}

static int cmd_unmount(const struct opts *o)
{
    if (!o->lowermnt || !o->root) usage("unmount needs --lowermnt --root");
    detach(o->root);
    detach(o->lowermnt);
    return 0;
}

static void mount_or_fail(const char *src, const char *dst, const char *type, unsigned long flags, const char *data)
{
    mkdir_p(dst, 0755);
    if (mount(src, dst, type, flags, data)) fail("mount %s on %s", type ? type : src, dst);
}

/* Inside a user namespace no device nodes can be made, so the harmless ones are bind-mounted from the host. */
static void bind_device(const char *name)
{
    char src[64], dst[64];
    snprintf(src, sizeof src, "/dev/%s", name);
    snprintf(dst, sizeof dst, "dev/%s", name);
    int fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) fail("create %s", dst);
    close(fd);
    if (mount(src, dst, NULL, MS_BIND, NULL)) fail("bind %s", src);
}

static void symlink_or_fail(const char *target, const char *path)
{
    if (symlink(target, path) && errno != EEXIST) fail("symlink %s", path);
}

/* A folder of the lower layer the capsule must not read (the agent's keys, say): an empty read-only tmpfs over it.
 * Only a real folder: a link there may be the capsule's own (from its layer), and is not followed. */
static void mask(const char *path)
{
    while (*path == '/') path++;
    struct stat st;
    if (*path == '\0' || lstat(path, &st) || !S_ISDIR(st.st_mode)) return;
    if (mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0755"))
        fail("mask %s", path);
}

/* The capsule's mounts, built in its own mount namespace under root (the cwd), then root becomes "/". */
static void make_root(const struct opts *o)
{
    const char *root = o->root;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) fail("make / private");
    /* The cwd is root's mount (the overlay; see cmd_run), but as a copy made for a less privileged user namespace
     * it is locked, and pivot_root refuses a locked mount: so a bind of it onto itself, made here. Root is never
     * looked up by its full path, which the capsule's ids may not traverse (the agent's folders are 0700): the
     * bind's source and target are the cwd, and the cwd goes onto the bind through root's own parent (0755). */
    if (mount(".", ".", NULL, MS_BIND | MS_REC, NULL)) fail("bind %s onto itself", root);
    const char *slash = strrchr(root, '/');
    char up[PATH_MAX];
    snprintf(up, sizeof up, "../%s", slash ? slash + 1 : root);
    if (chdir(up)) fail("chdir %s", up);
    mount_or_fail("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_or_fail("tmpfs", "dev", "tmpfs", MS_NOSUID, "mode=755,size=1m");
    const char *devices[] = {"null", "zero", "full", "random", "urandom", "tty"};
    for (size_t i = 0; i < sizeof devices / sizeof devices[0]; i++)
        bind_device(devices[i]);
    mount_or_fail("devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620");
    mount_or_fail("tmpfs", "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=64m");
    symlink_or_fail("pts/ptmx", "dev/ptmx");
    symlink_or_fail("/proc/self/fd", "dev/fd");
    symlink_or_fail("/proc/self/fd/0", "dev/stdin");
    symlink_or_fail("/proc/self/fd/1", "dev/stdout");
    symlink_or_fail("/proc/self/fd/2", "dev/stderr");
    /* The network namespace belongs to the capsule's user namespace, so sysfs should mount; if not, none. */
    mkdir_p("sys", 0755);
    if (mount("sysfs", "sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) && errno != EPERM)
        fail("mount sysfs on sys");
    for (size_t i = 0; i < o->nmasks; i++)
        mask(o->masks[i]);
    /* pivot_root with the same old and new root stacks the old root on "/", where it is detached at once: no
     * folder for the old root is needed inside the capsule. */
    if (syscall(SYS_pivot_root, ".", ".")) fail("pivot_root %s", root);
    if (umount2(".", MNT_DETACH)) fail("detach the old root");
    if (chdir("/")) fail("chdir /");
}

/* OCI's default capability set; every other capability leaves the bounding set. */
static void drop_caps_to_oci(void)
{
    const int keep[] = {CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, CAP_SETGID, CAP_SETUID,
                        CAP_SETPCAP, CAP_NET_BIND_SERVICE, CAP_NET_RAW, CAP_SYS_CHROOT, CAP_MKNOD, CAP_AUDIT_WRITE,
                        CAP_SETFCAP};
    for (int cap = 0; prctl(PR_CAPBSET_READ, cap) >= 0; cap++) {
        int kept = 0;
        for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
            kept |= keep[i] == cap;
        if (!kept && prctl(PR_CAPBSET_DROP, cap)) fail("drop capability %d", cap);
    }
}

static void open_output(const char *path, int target)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        mkdir_p(dir, 0755);
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || dup2(fd, target) < 0) fail("open %s", path);
    if (fd != target) close(fd);
}

/* The capsule's first process, once the agent said go: root of its user namespace, then CMD. */
static void capsule(const struct opts *o)
{
    if (setresgid(0, 0, 0) || setgroups(0, NULL) || setresuid(0, 0, 0)) fail("become root in the user namespace");
    make_root(o);
    if (chdir(o->cwd)) fail("chdir %s", o->cwd);
    if (sethostname(o->hostname, strlen(o->hostname))) fail("sethostname %s", o->hostname);
    if (setsid() < 0) fail("setsid");
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null < 0 || dup2(null, 0) < 0) fail("open /dev/null");
    close(null);
    open_output(o->out, 1);
    open_output(o->err, 2);
    /* Close-on-exec rather than close: the copy of the agent's stderr must stay for errors until the exec. */
    if (syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC)) fail("close_range");
    if (strcmp(o->caps, "oci") == 0) drop_caps_to_oci();
    unsetenv("TMPDIR");
    setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 0);
    execvp(o->cmd[0], o->cmd);
    int e = errno;
    dprintf(2, "capsule-launch: exec %s: %s\n", o->cmd[0], strerror(e));
    dprintf(err_fd, "capsule-launch: exec %s: %s\n", o->cmd[0], strerror(e));
    _exit(127);
}

/* One line from stdin, read byte by byte so that nothing after it is consumed. */
static int got_go(void)
{
    char line[16];
    size_t n = 0;
    char c;
    while (n < sizeof line - 1 && read(0, &c, 1) == 1 && c != '\n') line[n++] = c;
    line[n] = '\0';
    return strcmp(line, "go") == 0;
}

static int cmd_run(const struct opts *o)
{
    if (!o->root || !o->hostname || !o->out || !o->err || !o->cwd || !o->cmd || !o->cmd[0])
        usage("run needs --root --hostname --uid --count --stdout --stderr --cwd -- CMD");
    unsigned long base = number(o->uid, "bad --uid"), count = number(o->count, "bad --count");
    if (strcmp(o->caps, "oci") != 0 && strcmp(o->caps, "all") != 0) usage("--caps is oci or all");
    /* The child starts in root: a new mount namespace's copy of the cwd is the copy of its mount. */
    if (!is_mount_root(o->root)) {
        errno = EINVAL;
        fail("--root %s is not a mount point (capsule-launch rootfs makes one)", o->root);
    }
    if (chdir(o->root)) fail("chdir %s", o->root);
    int go[2];
    if (pipe2(go, O_CLOEXEC)) fail("pipe");
    fflush(NULL);
    /* fork-like clone (no stack: the child runs on a copy of this one) straight into all new namespaces, so the
     * child is PID 1 of its PID namespace and every namespace is owned by its user namespace. */
    pid_t pid = (pid_t)syscall(SYS_clone, CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC |
                               CLONE_NEWNET | SIGCHLD, NULL, NULL, NULL, NULL);
    if (pid < 0) fail("clone");
    if (pid == 0) {
        close(go[1]);
        err_fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
        char c;
        if (read(go[0], &c, 1) != 1)
            _exit(1);   /* the parent gave up; it has said why */
        close(go[0]);
        capsule(o);
    }
    victim = pid;
    close(go[0]);
    /* As host root, the maps can be written with setgroups allowed: programs in the capsule call setgroups. */
    set_id_maps(pid, base, count, 0);
    if (printf("%d\n", (int)pid) < 0 || fflush(stdout)) fail("write the pid");
    if (!got_go()) {
        errno = ECANCELED;
        fail("no \"go\" on stdin, the capsule is stopped");
    }
    if (write(go[1], "g", 1) != 1) fail("start the capsule");
    close(go[1]);
    victim = 0;
    /* Nothing of the agent's but stderr stays open here while the capsule runs. */
    int null = open("/dev/null", O_RDWR);
    if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || syscall(SYS_close_range, 3, ~0U, 0))
        fail("close the agent's files");
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) fail("wait for %d", (int)pid);
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

int main(int argc, char **argv)
{
    struct opts o = {.caps = "oci"};
    if (argc < 2) usage("no subcommand");
    umask(022);
    parse(argc, argv, &o);
    if (strcmp(argv[1], "rootfs") == 0) return cmd_rootfs(&o);
    if (strcmp(argv[1], "unmount") == 0) return cmd_unmount(&o);
    if (strcmp(argv[1], "run") == 0) return cmd_run(&o);
    usage("unknown subcommand");
}
