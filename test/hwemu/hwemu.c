/* hwemu.c: the libc boundary of libemshwemu.so.
 *
 * Every function here has the name and signature of a libc function, so a
 * preloaded copy of this library is what a program (and libgpiod, and
 * i2c-tools) calls. A call about an emulated path or fd is served by the
 * emulator; anything else goes straight to the next definition
 * (dlsym(RTLD_NEXT): libc, or the ASan runtime in a sanitized program).
 *
 * Emulated paths: /dev/i2c-N, /dev/gpiochipN, and the sysfs attribute
 * libgpiod 1.6 reads to check the chip, /sys/bus/gpio/devices/gpiochipN/dev
 * ("254:N"). /dev is listed with the two nodes added (scandir), and the
 * stat family, access and realpath answer for them consistently: character
 * devices 89:N (i2c-dev) and 254:N (gpiochip).
 *
 * Emulated fds are real fds, so poll/epoll/fcntl/dup work on them and the
 * numbers never collide with the program's: /dev/i2c-N and /dev/gpiochipN
 * are memfds (each its own inode), a line handle is an eventfd, a line
 * event fd a timerfd (gpiochip.c). A table maps fd -> object; an object
 * lives while an fd refers to it (dup shares it) or a call is using it.
 * The table also remembers each fd's inode and checks it on use, so an fd
 * the program closed behind our back (syscall(SYS_close), as libuv does in
 * places) is forgotten instead of being mistaken for ours when its number
 * comes back.
 *
 * The 64-bit variants (open64, stat64, ..., used by 32-bit programs built
 * with _FILE_OFFSET_BITS=64) and the pre-2.33 __xstat family are here too.
 * Needs glibc >= 2.33 (stat, lstat, fstat are real symbols there). Not
 * interposed: fopen and the time64 entry points of 32-bit programs built
 * with _TIME_BITS=64 (Debian 12's armhf does not use them).
 */
#include "hwemu.h"

#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <gnu/libc-version.h>
#include <limits.h>
#include <linux/gpio.h>
#include <linux/i2c-dev.h>
#include <linux/i2c.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define HWEMU__MAX_FD 65536
#define HWEMU__I2C_MAJOR 89
#define HWEMU__GPIO_MAJOR 254

/* Prototypes glibc only declares with _FORTIFY_SOURCE or not at all any
 * more; we define them because older or fortified programs call them. */
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);
ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen);
int __xstat(int ver, const char *path, struct stat *st);
int __lxstat(int ver, const char *path, struct stat *st);
int __fxstat(int ver, int fd, struct stat *st);
int __fxstatat(int ver, int dirfd, const char *path, struct stat *st, int flags);
int __xstat64(int ver, const char *path, struct stat64 *st);
int __lxstat64(int ver, const char *path, struct stat64 *st);
int __fxstat64(int ver, int fd, struct stat64 *st);
int __fxstatat64(int ver, int dirfd, const char *path, struct stat64 *st, int flags);
void __chk_fail(void) __attribute__((noreturn));

/* ------------------------------------------------------------------ the real functions */

static struct {
    int (*open)(const char *, int, ...);
    int (*open64)(const char *, int, ...);
    int (*openat)(int, const char *, int, ...);
    int (*openat64)(int, const char *, int, ...);
    int (*open_2)(const char *, int);
    int (*open64_2)(const char *, int);
    int (*openat_2)(int, const char *, int);
    int (*openat64_2)(int, const char *, int);
    int (*close)(int);
    ssize_t (*read)(int, void *, size_t);
    ssize_t (*write)(int, const void *, size_t);
    int (*ioctl)(int, unsigned long, ...);
    int (*dup)(int);
    int (*dup2)(int, int);
    int (*dup3)(int, int, int);
    int (*close_range)(unsigned, unsigned, int);
    void (*closefrom)(int);
    int (*stat)(const char *, struct stat *);
    int (*lstat)(const char *, struct stat *);
    int (*fstat)(int, struct stat *);
    int (*fstatat)(int, const char *, struct stat *, int);
    int (*stat64)(const char *, struct stat64 *);
    int (*lstat64)(const char *, struct stat64 *);
    int (*fstat64)(int, struct stat64 *);
    int (*fstatat64)(int, const char *, struct stat64 *, int);
    int (*statx)(int, const char *, int, unsigned, struct statx *);
    int (*access)(const char *, int);
    int (*faccessat)(int, const char *, int, int);
    int (*euidaccess)(const char *, int);
    char *(*realpath)(const char *, char *);
    int (*scandir)(const char *, struct dirent ***, int (*)(const struct dirent *),
                   int (*)(const struct dirent **, const struct dirent **));
    int (*scandir64)(const char *, struct dirent64 ***, int (*)(const struct dirent64 *),
                     int (*)(const struct dirent64 **, const struct dirent64 **));
} real;

static pthread_once_t hwemu__resolve_once = PTHREAD_ONCE_INIT;

static void *hwemu__sym(const char *name)
{
    return dlsym(RTLD_NEXT, name);
}

static void hwemu__resolve_all(void)
{
#define R(field, name) *(void **)(&real.field) = hwemu__sym(name)
    R(open, "open");
    R(open64, "open64");
    R(openat, "openat");
    R(openat64, "openat64");
    R(open_2, "__open_2");
    R(open64_2, "__open64_2");
    R(openat_2, "__openat_2");
    R(openat64_2, "__openat64_2");
    R(close, "close");
    R(read, "read");
    R(write, "write");
    R(ioctl, "ioctl");
    R(dup, "dup");
    R(dup2, "dup2");
    R(dup3, "dup3");
    R(close_range, "close_range");
    R(closefrom, "closefrom");
    R(stat, "stat");
    R(lstat, "lstat");
    R(fstat, "fstat");
    R(fstatat, "fstatat");
    R(stat64, "stat64");
    R(lstat64, "lstat64");
    R(fstat64, "fstat64");
    R(fstatat64, "fstatat64");
    R(statx, "statx");
    R(access, "access");
    R(faccessat, "faccessat");
    R(euidaccess, "euidaccess");
    R(realpath, "realpath");
    R(scandir, "scandir");
    R(scandir64, "scandir64");
#undef R
}

static inline void hwemu__resolve(void)
{
    pthread_once(&hwemu__resolve_once, hwemu__resolve_all);
}

/* Calls the next definition, or fails with ENOSYS if there is none. */
#define REAL(fn, ...) (hwemu__resolve(), real.fn ? real.fn(__VA_ARGS__) : (errno = ENOSYS, -1))

int hwemu_real_open(const char *path, int flags, int mode)
{
    return REAL(open, path, flags, mode);
}

int hwemu_real_close(int fd)
{
    return REAL(close, fd);
}

long hwemu_real_write(int fd, const void *buf, size_t len)
{
    return REAL(write, fd, buf, len);
}

int hwemu_real_stat(const char *path, int64_t *mtime_ns, int64_t *size, int64_t *ino)
{
    struct stat st;
    if (REAL(stat, path, &st) != 0)
        return -errno;
    *mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    *size = (int64_t)st.st_size;
    *ino = (int64_t)st.st_ino;
    return 0;
}

/* ------------------------------------------------------------------ one glibc */

/* ld.so and libc.so.6 must come from one glibc build: they share private
 * structures (_rtld_global). qemu-user's -L PREFIX can pair two: it finds
 * the interpreter under PREFIX (the cross toolchain's libc6-ARCH-cross, say
 * 2.36-8) while ld.so finds the libraries, libc.so.6 among them, in the
 * multiarch /lib/TRIPLE (libc6:ARCH, say 2.36-9+deb12u14). Such a program,
 * with or without this library, spins for ever (arm64) or crashes (armhf)
 * in its first pthread_create (Debian's 2.36-8 and 2.36-9+deb12u14 place
 * the thread-stack lists 8 bytes apart in _rtld_global). Nothing here can
 * repair that, so it is said on stderr. */

#if UINTPTR_MAX > 0xFFFFFFFFu
typedef Elf64_Ehdr hwemu__ehdr_t;
typedef Elf64_Phdr hwemu__phdr_t;
#else
typedef Elf32_Ehdr hwemu__ehdr_t;
typedef Elf32_Phdr hwemu__phdr_t;
#endif

/* The text after `prefix` up to the line's end, found in the readable
 * segments of the object whose ELF header is mapped at `base`; "" if none. */
static void hwemu__banner(uintptr_t base, const char *prefix, char *out, size_t cap)
{
    out[0] = '\0';
    const hwemu__ehdr_t *eh = (const hwemu__ehdr_t *)base;
    if (!base || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] !=
        (sizeof(uintptr_t) == 8 ? ELFCLASS64 : ELFCLASS32))
        return;
    const hwemu__phdr_t *ph = (const hwemu__phdr_t *)(base + eh->e_phoff);
    uintptr_t bias = 0;
    bool have_bias = false;
    for (unsigned i = 0; i < eh->e_phnum && !have_bias; i++) {
        if (ph[i].p_type == PT_LOAD && ph[i].p_offset == 0) {
            bias = base - (uintptr_t)ph[i].p_vaddr;
            have_bias = true;
        }
    }
    if (!have_bias)
        return;
    size_t plen = strlen(prefix);
    for (unsigned i = 0; i < eh->e_phnum; i++) {
        if (ph[i].p_type != PT_LOAD || !(ph[i].p_flags & PF_R))
            continue;
        const char *seg = (const char *)(bias + (uintptr_t)ph[i].p_vaddr);
        const char *hit = memmem(seg, ph[i].p_filesz, prefix, plen);
        if (!hit)
            continue;
        const char *s = hit + plen, *end = seg + ph[i].p_filesz;
        size_t n = 0;
        while (s + n < end && n < cap - 1 && s[n] != '\n' && s[n] != '\0')
            n++;
        memcpy(out, s, n);
        out[n] = '\0';
        return;
    }
}

void hwemu_check_glibc(void)
{
    /* "ld.so (Debian GLIBC 2.36-8) stable release version 2.36." (glibc >=
     * 2.33) and "GNU C Library (Debian GLIBC 2.36-9+deb12u14) stable ...". */
    char rtld[160], libc[160];
    Dl_info di;
    uintptr_t rtld_base = (uintptr_t)getauxval(AT_BASE); /* 0: ld.so is the program */
    if (!rtld_base || !dladdr((void *)gnu_get_libc_version, &di) || !di.dli_fbase)
        return;
    hwemu__banner(rtld_base, "ld.so (", rtld, sizeof rtld);
    hwemu__banner((uintptr_t)di.dli_fbase, "GNU C Library (", libc, sizeof libc);
    if (!rtld[0] || !libc[0] || strcmp(rtld, libc) == 0)
        return;
    fprintf(stderr,
            "ems-hwemu: ld.so (%.*s) and libc.so.6 (%.*s) are from different glibc builds: this "
            "program will hang or crash in its first pthread_create. Under qemu-user, drop -L "
            "(the multiarch ld.so matches the multiarch libc) or give one holding both.\n",
            (int)strcspn(rtld, ")"), rtld, (int)strcspn(libc, ")"), libc);
}

/* ------------------------------------------------------------------ the fd table */

typedef enum { HWEMU_FD_I2C = 1, HWEMU_FD_CHIP, HWEMU_FD_HANDLE, HWEMU_FD_EVENT } hwemu__kind_t;

typedef struct {
    hwemu__kind_t kind;
    int refs; /* fds referring to it */
    int pins; /* calls using it */
    bool released;
    unsigned slave; /* i2c: the I2C_SLAVE address, HWEMU_NOADDR before one */
    bool pec, tenbit;
    hwemu_gpio_req_t *req; /* handle and event */
    dev_t dev;             /* the real fd's identity */
    ino_t ino;
} hwemu__obj_t;

static hwemu__obj_t **hwemu__fds;

/* Lock-free look: is this fd one of ours? (The answer is re-checked under
 * the lock before it is used.) */
static inline hwemu__obj_t *hwemu__peek(int fd)
{
    hwemu__obj_t **t = __atomic_load_n(&hwemu__fds, __ATOMIC_ACQUIRE);
    if (!t || fd < 0 || fd >= HWEMU__MAX_FD)
        return NULL;
    return __atomic_load_n(&t[fd], __ATOMIC_ACQUIRE);
}

/* Under the lock. */
static int hwemu__track(int fd, hwemu__obj_t *o)
{
    if (fd < 0 || fd >= HWEMU__MAX_FD)
        return -EMFILE;
    if (!hwemu__fds) {
        hwemu__obj_t **t = calloc(HWEMU__MAX_FD, sizeof *t);
        if (!t)
            return -ENOMEM;
        __atomic_store_n(&hwemu__fds, t, __ATOMIC_RELEASE);
    }
    if (o->refs == 0) {
        struct stat st;
        if (REAL(fstat, fd, &st) != 0)
            return -errno;
        o->dev = st.st_dev;
        o->ino = st.st_ino;
    }
    o->refs++;
    __atomic_store_n(&hwemu__fds[fd], o, __ATOMIC_RELEASE);
    return 0;
}

static void hwemu__maybe_free(hwemu_t *e, hwemu__obj_t *o)
{
    if (o->refs == 0 && !o->released) {
        o->released = true;
        if (o->req)
            hwemu_gpio_req_release(e, o->req);
    }
    if (o->refs == 0 && o->pins == 0) {
        if (o->req)
            hwemu_gpio_req_free(o->req);
        free(o);
    }
}

/* Under the lock: forgets fd; releases the object with its last fd. */
static void hwemu__untrack(hwemu_t *e, int fd)
{
    hwemu__obj_t *o = hwemu__peek(fd);
    if (!o)
        return;
    __atomic_store_n(&hwemu__fds[fd], NULL, __ATOMIC_RELEASE);
    o->refs--;
    hwemu__maybe_free(e, o);
}

/* Under the lock: whether fd still is the file we tracked; forgets it if
 * not (closed behind our back, the number reused). */
static bool hwemu__still_ours(hwemu_t *e, int fd, const hwemu__obj_t *o)
{
    struct stat st;
    if (REAL(fstat, fd, &st) == 0 && st.st_dev == o->dev && st.st_ino == o->ino)
        return true;
    hwemu_log(e, "fd %d was closed without close(): forgotten", fd);
    hwemu__untrack(e, fd);
    return false;
}

/* Takes the lock and pins the object of fd; NULL (unlocked) if it is not
 * ours after all. */
static hwemu__obj_t *hwemu__enter(int fd, hwemu_t **ep)
{
    hwemu_t *e = hwemu_get();
    if (!e)
        return NULL;
    hwemu_lock();
    hwemu__obj_t *o = hwemu__peek(fd);
    if (!o || !hwemu__still_ours(e, fd, o)) {
        hwemu_unlock();
        return NULL;
    }
    o->pins++;
    hwemu_tick(e);
    *ep = e;
    return o;
}

static void hwemu__leave(hwemu_t *e, hwemu__obj_t *o)
{
    o->pins--;
    hwemu__maybe_free(e, o);
    hwemu_unlock();
}

/* ------------------------------------------------------------------ paths */

typedef enum {
    HWEMU_PATH_NONE = 0,
    HWEMU_PATH_I2C,
    HWEMU_PATH_CHIP,
    HWEMU_PATH_SYSDEV
} hwemu__path_t;

/* Lexically normalises an absolute path: no "//", ".", "..", trailing "/". */
static void hwemu__normalise(char *p)
{
    char *out = p, *in = p;
    while (*in) {
        while (*in == '/')
            in++;
        if (!*in)
            break;
        char *seg = in;
        while (*in && *in != '/')
            in++;
        size_t n = (size_t)(in - seg);
        if (n == 1 && seg[0] == '.')
            continue;
        if (n == 2 && seg[0] == '.' && seg[1] == '.') {
            while (out > p && *--out != '/')
                ;
            continue;
        }
        *out++ = '/';
        memmove(out, seg, n);
        out += n;
    }
    if (out == p)
        *out++ = '/';
    *out = '\0';
}

/* The absolute, normalised form of (dirfd, path) in buf, or false. */
static bool hwemu__abspath(int dirfd, const char *path, char *buf, size_t size)
{
    size_t n = strlen(path);
    if (path[0] == '/') {
        if (n >= size)
            return false;
        memcpy(buf, path, n + 1);
    } else {
        char dir[PATH_MAX];
        if (dirfd == AT_FDCWD) {
            if (!getcwd(dir, sizeof dir))
                return false;
        } else {
            char link[64];
            snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
            ssize_t k = readlink(link, dir, sizeof dir - 1);
            if (k <= 0)
                return false;
            dir[k] = '\0';
        }
        if (snprintf(buf, size, "%s/%s", dir, path) >= (int)size)
            return false;
    }
    hwemu__normalise(buf);
    return true;
}

static hwemu__path_t hwemu__classify_at(int dirfd, const char *path, hwemu_t **ep)
{
    /* Cheap test first: most paths a program touches are not ours. */
    if (!path || (!strstr(path, "i2c") && !strstr(path, "gpiochip")))
        return HWEMU_PATH_NONE;
    hwemu_t *e = hwemu_get();
    if (!e)
        return HWEMU_PATH_NONE;
    char buf[PATH_MAX], want[128];
    if (!hwemu__abspath(dirfd, path, buf, sizeof buf))
        return HWEMU_PATH_NONE;
    if (ep)
        *ep = e;
    snprintf(want, sizeof want, "/dev/i2c-%d", e->cfg.i2c_bus);
    if (strcmp(buf, want) == 0)
        return HWEMU_PATH_I2C;
    snprintf(want, sizeof want, "/dev/%s", e->cfg.gpiochip);
    if (strcmp(buf, want) == 0)
        return HWEMU_PATH_CHIP;
    snprintf(want, sizeof want, "/sys/bus/gpio/devices/%s/dev", e->cfg.gpiochip);
    if (strcmp(buf, want) == 0)
        return HWEMU_PATH_SYSDEV;
    return HWEMU_PATH_NONE;
}

static hwemu__path_t hwemu__classify(const char *path, hwemu_t **ep)
{
    return hwemu__classify_at(AT_FDCWD, path, ep);
}

/* ------------------------------------------------------------------ fake stat */

typedef struct {
    mode_t mode;
    dev_t dev, rdev;
    ino_t ino;
    off_t size;
    struct timespec time;
} hwemu__fake_t;

static void hwemu__fake(hwemu_t *e, hwemu__path_t k, hwemu__fake_t *f)
{
    static struct timespec boot;
    if (boot.tv_sec == 0)
        clock_gettime(CLOCK_REALTIME, &boot);
    memset(f, 0, sizeof *f);
    f->time = boot;
    switch (k) {
    case HWEMU_PATH_I2C:
        f->mode = S_IFCHR | 0660;
        f->dev = makedev(0, 5);
        f->rdev = makedev(HWEMU__I2C_MAJOR, (unsigned)e->cfg.i2c_bus);
        f->ino = 4000 + (ino_t)e->cfg.i2c_bus;
        break;
    case HWEMU_PATH_CHIP:
        f->mode = S_IFCHR | 0660;
        f->dev = makedev(0, 5);
        f->rdev = makedev(HWEMU__GPIO_MAJOR, (unsigned)e->cfg.gpiochip_num);
        f->ino = 5000 + (ino_t)e->cfg.gpiochip_num;
        break;
    default:
        f->mode = S_IFREG | 0444;
        f->dev = makedev(0, 21);
        f->ino = 6000 + (ino_t)e->cfg.gpiochip_num;
        f->size = 4096;
        break;
    }
}

#define HWEMU__FILL_STAT(st, f)                                                                    \
    do {                                                                                           \
        memset((st), 0, sizeof *(st));                                                             \
        (st)->st_dev = (f)->dev;                                                                   \
        (st)->st_ino = (f)->ino;                                                                   \
        (st)->st_mode = (f)->mode;                                                                 \
        (st)->st_nlink = 1;                                                                        \
        (st)->st_rdev = (f)->rdev;                                                                 \
        (st)->st_size = (f)->size;                                                                 \
        (st)->st_blksize = 4096;                                                                   \
        (st)->st_atim = (st)->st_mtim = (st)->st_ctim = (f)->time;                                 \
    } while (0)

static void hwemu__fill_statx(struct statx *sx, const hwemu__fake_t *f)
{
    memset(sx, 0, sizeof *sx);
    sx->stx_mask = STATX_BASIC_STATS;
    sx->stx_blksize = 4096;
    sx->stx_nlink = 1;
    sx->stx_mode = (uint16_t)f->mode;
    sx->stx_ino = f->ino;
    sx->stx_size = (uint64_t)f->size;
    sx->stx_atime.tv_sec = sx->stx_mtime.tv_sec = sx->stx_ctime.tv_sec = f->time.tv_sec;
    sx->stx_atime.tv_nsec = sx->stx_mtime.tv_nsec = sx->stx_ctime.tv_nsec =
        (uint32_t)f->time.tv_nsec;
    sx->stx_rdev_major = major(f->rdev);
    sx->stx_rdev_minor = minor(f->rdev);
    sx->stx_dev_major = major(f->dev);
    sx->stx_dev_minor = minor(f->dev);
}

/* The fake stat of an fd of ours (the chip and the bus; the request fds
 * are anonymous inodes and answer for themselves). */
static bool hwemu__fd_fake(int fd, hwemu__fake_t *f)
{
    if (!hwemu__peek(fd))
        return false;
    hwemu_t *e;
    hwemu__obj_t *o = hwemu__enter(fd, &e);
    if (!o)
        return false;
    bool dev = o->kind == HWEMU_FD_I2C || o->kind == HWEMU_FD_CHIP;
    if (dev)
        hwemu__fake(e, o->kind == HWEMU_FD_I2C ? HWEMU_PATH_I2C : HWEMU_PATH_CHIP, f);
    hwemu__leave(e, o);
    return dev;
}

/* ------------------------------------------------------------------ open */

static int hwemu__fail(int err)
{
    errno = err;
    return -1;
}

/* Opens an emulated path; -1 with errno on failure. */
static int hwemu__open_emulated(hwemu_t *e, hwemu__path_t k, int flags)
{
    if (flags & O_DIRECTORY)
        return hwemu__fail(ENOTDIR);
    if ((flags & O_CREAT) && (flags & O_EXCL))
        return hwemu__fail(EEXIST);
    if (k == HWEMU_PATH_SYSDEV) {
        if ((flags & O_ACCMODE) != O_RDONLY)
            return hwemu__fail(EACCES);
        char text[32];
        int n = snprintf(text, sizeof text, "%d:%d\n", HWEMU__GPIO_MAJOR, e->cfg.gpiochip_num);
        int fd = memfd_create("hwemu-sysfs", (flags & O_CLOEXEC) ? MFD_CLOEXEC : 0);
        if (fd < 0)
            return -1;
        if (REAL(write, fd, text, (size_t)n) != n || lseek(fd, 0, SEEK_SET) != 0) {
            int err = errno;
            REAL(close, fd);
            return hwemu__fail(err ? err : EIO);
        }
        return fd;
    }
    char name[48];
    snprintf(name, sizeof name, "hwemu-%s", k == HWEMU_PATH_I2C ? "i2c" : e->cfg.gpiochip);
    int fd = memfd_create(name, (flags & O_CLOEXEC) ? MFD_CLOEXEC : 0);
    if (fd < 0)
        return -1;
    if ((flags & O_NONBLOCK) && fcntl(fd, F_SETFL, O_NONBLOCK) != 0) {
        int err = errno;
        REAL(close, fd);
        return hwemu__fail(err);
    }
    hwemu__obj_t *o = calloc(1, sizeof *o);
    if (!o) {
        REAL(close, fd);
        return hwemu__fail(ENOMEM);
    }
    o->kind = k == HWEMU_PATH_I2C ? HWEMU_FD_I2C : HWEMU_FD_CHIP;
    o->slave = HWEMU_NOADDR;
    hwemu_lock();
    int rc = hwemu__track(fd, o);
    if (rc == 0) {
        hwemu_tick(e);
        hwemu_log(e, "open %s -> fd %d", k == HWEMU_PATH_I2C ? "i2c" : "gpiochip", fd);
    }
    hwemu_unlock();
    if (rc) {
        free(o);
        REAL(close, fd);
        return hwemu__fail(-rc);
    }
    return fd;
}

static int hwemu__mode_arg(int flags, va_list ap)
{
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? va_arg(ap, int) : 0;
}

HWEMU_EXPORT int open(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    int mode = hwemu__mode_arg(flags, ap);
    va_end(ap);
    hwemu_t *e = NULL;
    hwemu__path_t k = hwemu__classify(path, &e);
    if (k)
        return hwemu__open_emulated(e, k, flags);
    return REAL(open, path, flags, mode);
}

HWEMU_EXPORT int open64(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    int mode = hwemu__mode_arg(flags, ap);
    va_end(ap);
    hwemu_t *e = NULL;
    hwemu__path_t k = hwemu__classify(path, &e);
    if (k)
        return hwemu__open_emulated(e, k, flags);
    return REAL(open64, path, flags, mode);
}

HWEMU_EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    int mode = hwemu__mode_arg(flags, ap);
    va_end(ap);
    hwemu_t *e = NULL;
    hwemu__path_t k = hwemu__classify_at(dirfd, path, &e);
    if (k)
        return hwemu__open_emulated(e, k, flags);
    return REAL(openat, dirfd, path, flags, mode);
}

HWEMU_EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    int mode = hwemu__mode_arg(flags, ap);
    va_end(ap);
    hwemu_t *e = NULL;
    hwemu__path_t k = hwemu__classify_at(dirfd, path, &e);
    if (k)
        return hwemu__open_emulated(e, k, flags);
    return REAL(openat64, dirfd, path, flags, mode);
}

HWEMU_EXPORT int __open_2(const char *path, int flags)
{
    hwemu_t *e = NULL;
    hwemu__path_t k = hwemu__classify(path, &e);
    if (k)
        return hwemu__open_emulated(e, k, flags);
    return real.open_2 || (hwemu__resolve(), real.open_2) ? real.open_2(path, flags)
                                                          : REAL(open, path, flags);
}

HWEMU_EXPORT int __open64_2(const char *path, int flags)
{
    hwemu_t *e = NULL;
    hwemu__path_t k = hwemu__classify(path, &e);
    if (k)
        return hwemu__open_emulated(e, k, flags);
    return real.open64_2 || (hwemu__resolve(), real.open64_2) ? real.open64_2(path, flags)
                                                              : REAL(open64, path, flags);
}

HWEMU_EXPORT int __openat_2(int dirfd, const char *path, int flags)
{
    hwemu_t *e = NULL;
    hwemu__path_t k = hwemu__classify_at(dirfd, path, &e);
    if (k)
        return hwemu__open_emulated(e, k, flags);
    return real.openat_2 || (hwemu__resolve(), real.openat_2) ? real.openat_2(dirfd, path, flags)
                                                              : REAL(openat, dirfd, path, flags);
}

HWEMU_EXPORT int __openat64_2(int dirfd, const char *path, int flags)
{
    hwemu_t *e = NULL;
    hwemu__path_t k = hwemu__classify_at(dirfd, path, &e);
    if (k)
        return hwemu__open_emulated(e, k, flags);
    return real.openat64_2 || (hwemu__resolve(), real.openat64_2)
               ? real.openat64_2(dirfd, path, flags)
               : REAL(openat64, dirfd, path, flags);
}

/* ------------------------------------------------------------------ close, dup */

HWEMU_EXPORT int close(int fd)
{
    if (hwemu__peek(fd)) {
        hwemu_t *e = hwemu_get();
        if (e) {
            hwemu_lock();
            hwemu__untrack(e, fd);
            hwemu_log(e, "close fd %d", fd);
            hwemu_unlock();
        }
    }
    return REAL(close, fd);
}

/* After a successful dup of `oldfd` to `newfd`: share the object. */
static void hwemu__dup_track(int oldfd, int newfd)
{
    if (newfd < 0 || newfd == oldfd)
        return;
    hwemu_t *e = hwemu_get();
    if (!e)
        return;
    hwemu_lock();
    hwemu__untrack(e, newfd); /* dup2 over one of ours closes it */
    hwemu__obj_t *o = hwemu__peek(oldfd);
    if (o)
        hwemu__track(newfd, o);
    hwemu_unlock();
}

/* close_range(2) and closefrom(3) close our fds too. */
static void hwemu__untrack_range(unsigned first, unsigned last)
{
    if (!__atomic_load_n(&hwemu__fds, __ATOMIC_ACQUIRE))
        return;
    hwemu_t *e = hwemu_get();
    if (!e)
        return;
    hwemu_lock();
    for (unsigned fd = first; fd <= last && fd < HWEMU__MAX_FD; fd++)
        if (hwemu__fds[fd])
            hwemu__untrack(e, (int)fd);
    hwemu_unlock();
}

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

HWEMU_EXPORT int close_range(unsigned first, unsigned last, int flags)
{
    if (!(flags & CLOSE_RANGE_CLOEXEC) && first <= last)
        hwemu__untrack_range(first, last);
    return REAL(close_range, first, last, flags);
}

HWEMU_EXPORT void closefrom(int lowfd)
{
    if (lowfd >= 0)
        hwemu__untrack_range((unsigned)lowfd, ~0U);
    hwemu__resolve();
    if (real.closefrom)
        real.closefrom(lowfd);
}

HWEMU_EXPORT int dup(int fd)
{
    int nfd = REAL(dup, fd);
    if (nfd >= 0 && hwemu__peek(fd))
        hwemu__dup_track(fd, nfd);
    return nfd;
}

HWEMU_EXPORT int dup2(int oldfd, int newfd)
{
    int rc = REAL(dup2, oldfd, newfd);
    if (rc >= 0 && (hwemu__peek(oldfd) || hwemu__peek(newfd)))
        hwemu__dup_track(oldfd, rc);
    return rc;
}

HWEMU_EXPORT int dup3(int oldfd, int newfd, int flags)
{
    int rc = REAL(dup3, oldfd, newfd, flags);
    if (rc >= 0 && (hwemu__peek(oldfd) || hwemu__peek(newfd)))
        hwemu__dup_track(oldfd, rc);
    return rc;
}

/* ------------------------------------------------------------------ read, write */

static bool hwemu__nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && (fl & O_NONBLOCK);
}

HWEMU_EXPORT ssize_t read(int fd, void *buf, size_t n)
{
    hwemu__obj_t *o = hwemu__peek(fd);
    if (!o || o->kind == HWEMU_FD_CHIP || o->kind == HWEMU_FD_HANDLE)
        return REAL(read, fd, buf, n);
    hwemu_t *e;
    if (!(o = hwemu__enter(fd, &e)))
        return REAL(read, fd, buf, n);
    long rc;
    if (o->kind == HWEMU_FD_EVENT)
        rc = hwemu_gpio_event_read(e, o->req, buf, n, hwemu__nonblock(fd));
    else if (o->slave == HWEMU_NOADDR)
        rc = -EREMOTEIO; /* no I2C_SLAVE yet: address 0 answers nothing */
    else if (o->tenbit)
        rc = -EOPNOTSUPP;
    else
        rc = hwemu_i2c_rw(e, o->slave, buf, n, true);
    hwemu__leave(e, o);
    return rc < 0 ? hwemu__fail((int)-rc) : (ssize_t)rc;
}

HWEMU_EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
    if (n > buflen)
        __chk_fail();
    return read(fd, buf, n);
}

HWEMU_EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
    hwemu__obj_t *o = hwemu__peek(fd);
    if (!o || o->kind != HWEMU_FD_I2C)
        return REAL(write, fd, buf, n);
    hwemu_t *e;
    if (!(o = hwemu__enter(fd, &e)))
        return REAL(write, fd, buf, n);
    long rc;
    if (o->slave == HWEMU_NOADDR)
        rc = -EREMOTEIO;
    else if (o->tenbit)
        rc = -EOPNOTSUPP;
    else
        rc = hwemu_i2c_rw(e, o->slave, (void *)(uintptr_t)buf, n, false);
    hwemu__leave(e, o);
    return rc < 0 ? hwemu__fail((int)-rc) : (ssize_t)rc;
}

/* ------------------------------------------------------------------ ioctl */

static int hwemu__ioctl_i2c(hwemu_t *e, hwemu__obj_t *o, unsigned long req, void *arg)
{
    unsigned long val = (unsigned long)(uintptr_t)arg;
    switch (req) {
    case I2C_RETRIES:
    case I2C_TIMEOUT:
        return 0;
    case I2C_SLAVE:
    case I2C_SLAVE_FORCE:
        val &= 0xFFFFFFFFUL;
        if ((!o->tenbit && val > 0x7f) || val > 0x3ff)
            return -EINVAL;
        o->slave = (unsigned)val;
        return 0;
    case I2C_TENBIT:
        o->tenbit = val != 0;
        return 0;
    case I2C_PEC:
        o->pec = val != 0;
        return 0;
    case I2C_FUNCS:
        if (!arg)
            return -EFAULT;
        *(unsigned long *)arg = hwemu_i2c_funcs();
        return 0;
    case I2C_RDWR: {
        struct i2c_rdwr_ioctl_data *d = arg;
        if (!d || (!d->msgs && d->nmsgs))
            return -EFAULT;
        return hwemu_i2c_rdwr(e, d->msgs, d->nmsgs);
    }
    case I2C_SMBUS:
        if (!arg)
            return -EFAULT;
        if (o->slave == HWEMU_NOADDR)
            return -EREMOTEIO;
        if (o->tenbit)
            return -EOPNOTSUPP;
        return hwemu_i2c_smbus(e, o->slave, o->pec, arg);
    default:
        return -ENOTTY;
    }
}

static int hwemu__ioctl_chip(hwemu_t *e, unsigned long req, void *arg)
{
    hwemu_gpio_req_t *r = NULL;
    int rc;
    hwemu__kind_t kind;
    bool known = req == GPIO_GET_CHIPINFO_IOCTL || req == GPIO_GET_LINEINFO_IOCTL ||
                 req == GPIO_GET_LINEHANDLE_IOCTL || req == GPIO_GET_LINEEVENT_IOCTL;
    if (known && !arg)
        return -EFAULT;
    switch (req) {
    case GPIO_GET_CHIPINFO_IOCTL:
        return hwemu_gpio_chipinfo(e, arg);
    case GPIO_GET_LINEINFO_IOCTL:
        return hwemu_gpio_lineinfo(e, arg);
    case GPIO_GET_LINEHANDLE_IOCTL:
        rc = hwemu_gpio_linehandle(e, arg, &r);
        kind = HWEMU_FD_HANDLE;
        break;
    case GPIO_GET_LINEEVENT_IOCTL:
        rc = hwemu_gpio_lineevent(e, arg, &r);
        kind = HWEMU_FD_EVENT;
        break;
    default:
        /* The line-info watch and the v2 uAPI are not emulated. */
        return -ENOTTY;
    }
    if (rc)
        return rc;
    int fd = req == GPIO_GET_LINEHANDLE_IOCTL ? ((struct gpiohandle_request *)arg)->fd
                                              : ((struct gpioevent_request *)arg)->fd;
    hwemu__obj_t *o = calloc(1, sizeof *o);
    if (!o || hwemu__track(fd, o) != 0) {
        free(o);
        hwemu_gpio_req_release(e, r);
        hwemu_gpio_req_free(r);
        REAL(close, fd);
        return -ENOMEM;
    }
    o->kind = kind;
    o->req = r;
    return 0;
}

HWEMU_EXPORT int ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    va_start(ap, req);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    hwemu__obj_t *o = hwemu__peek(fd);
    /* What every fd understands goes to the real fd underneath. */
    if (!o || req == FIONBIO || req == FIOCLEX || req == FIONCLEX || req == FIOASYNC)
        return REAL(ioctl, fd, req, arg);
    hwemu_t *e;
    if (!(o = hwemu__enter(fd, &e)))
        return REAL(ioctl, fd, req, arg);
    int rc;
    switch (o->kind) {
    case HWEMU_FD_I2C:
        rc = hwemu__ioctl_i2c(e, o, req, arg);
        break;
    case HWEMU_FD_CHIP:
        rc = hwemu__ioctl_chip(e, req, arg);
        break;
    default:
        rc = hwemu_gpio_req_ioctl(e, o->req, req, arg);
        break;
    }
    if (rc < 0 && o->kind != HWEMU_FD_I2C)
        hwemu_log(e, "gpio ioctl fd %d 0x%lx -> %s", fd, req, strerror(-rc));
    hwemu__leave(e, o);
    return rc < 0 ? hwemu__fail(-rc) : rc;
}

/* ------------------------------------------------------------------ stat family */

/* A NULL-safe "is the empty path" (the libc prototypes promise non-NULL
 * paths, but a wrong program must get EFAULT from the kernel, not a crash
 * here). */
static bool hwemu__empty(const char *p)
{
    return p && p[0] == '\0';
}

#define HWEMU__PATH_STAT(type, path, st, realcall)                                                 \
    do {                                                                                           \
        hwemu_t *e_ = NULL;                                                                        \
        hwemu__path_t k_ = hwemu__classify((path), &e_);                                           \
        if (k_) {                                                                                  \
            hwemu__fake_t f_;                                                                      \
            hwemu__fake(e_, k_, &f_);                                                              \
            HWEMU__FILL_STAT((st), &f_);                                                           \
            return 0;                                                                              \
        }                                                                                          \
        return realcall;                                                                           \
    } while (0)

#define HWEMU__FD_STAT(fd, st, realcall)                                                           \
    do {                                                                                           \
        hwemu__fake_t f_;                                                                          \
        if (hwemu__fd_fake((fd), &f_)) {                                                           \
            HWEMU__FILL_STAT((st), &f_);                                                           \
            return 0;                                                                              \
        }                                                                                          \
        return realcall;                                                                           \
    } while (0)

#define HWEMU__AT_STAT(dirfd, path, st, flags, realcall)                                           \
    do {                                                                                           \
        if (((flags)&AT_EMPTY_PATH) && hwemu__empty(path))                                         \
            HWEMU__FD_STAT((dirfd), (st), realcall);                                               \
        hwemu_t *e_ = NULL;                                                                        \
        hwemu__path_t k_ = hwemu__classify_at((dirfd), (path), &e_);                               \
        if (k_) {                                                                                  \
            hwemu__fake_t f_;                                                                      \
            hwemu__fake(e_, k_, &f_);                                                              \
            HWEMU__FILL_STAT((st), &f_);                                                           \
            return 0;                                                                              \
        }                                                                                          \
        return realcall;                                                                           \
    } while (0)

HWEMU_EXPORT int stat(const char *restrict path, struct stat *restrict st)
{
    HWEMU__PATH_STAT(struct stat, path, st, REAL(stat, path, st));
}

HWEMU_EXPORT int lstat(const char *restrict path, struct stat *restrict st)
{
    HWEMU__PATH_STAT(struct stat, path, st, REAL(lstat, path, st));
}

HWEMU_EXPORT int fstat(int fd, struct stat *st)
{
    HWEMU__FD_STAT(fd, st, REAL(fstat, fd, st));
}

HWEMU_EXPORT int fstatat(int dirfd, const char *restrict path, struct stat *restrict st, int flags)
{
    HWEMU__AT_STAT(dirfd, path, st, flags, REAL(fstatat, dirfd, path, st, flags));
}

HWEMU_EXPORT int stat64(const char *restrict path, struct stat64 *restrict st)
{
    HWEMU__PATH_STAT(struct stat64, path, st, REAL(stat64, path, st));
}

HWEMU_EXPORT int lstat64(const char *restrict path, struct stat64 *restrict st)
{
    HWEMU__PATH_STAT(struct stat64, path, st, REAL(lstat64, path, st));
}

HWEMU_EXPORT int fstat64(int fd, struct stat64 *st)
{
    HWEMU__FD_STAT(fd, st, REAL(fstat64, fd, st));
}

HWEMU_EXPORT int fstatat64(int dirfd, const char *restrict path, struct stat64 *restrict st,
                           int flags)
{
    HWEMU__AT_STAT(dirfd, path, st, flags, REAL(fstatat64, dirfd, path, st, flags));
}

/* Programs built against glibc < 2.33 call these; the structure is the one
 * of the same name, so the modern call serves them. */
HWEMU_EXPORT int __xstat(int ver, const char *path, struct stat *st)
{
    (void)ver;
    return stat(path, st);
}

HWEMU_EXPORT int __lxstat(int ver, const char *path, struct stat *st)
{
    (void)ver;
    return lstat(path, st);
}

HWEMU_EXPORT int __fxstat(int ver, int fd, struct stat *st)
{
    (void)ver;
    return fstat(fd, st);
}

HWEMU_EXPORT int __fxstatat(int ver, int dirfd, const char *path, struct stat *st, int flags)
{
    (void)ver;
    return fstatat(dirfd, path, st, flags);
}

HWEMU_EXPORT int __xstat64(int ver, const char *path, struct stat64 *st)
{
    (void)ver;
    return stat64(path, st);
}

HWEMU_EXPORT int __lxstat64(int ver, const char *path, struct stat64 *st)
{
    (void)ver;
    return lstat64(path, st);
}

HWEMU_EXPORT int __fxstat64(int ver, int fd, struct stat64 *st)
{
    (void)ver;
    return fstat64(fd, st);
}

HWEMU_EXPORT int __fxstatat64(int ver, int dirfd, const char *path, struct stat64 *st, int flags)
{
    (void)ver;
    return fstatat64(dirfd, path, st, flags);
}

HWEMU_EXPORT int statx(int dirfd, const char *restrict path, int flags, unsigned mask,
                       struct statx *restrict sx)
{
    hwemu__fake_t f;
    if ((flags & AT_EMPTY_PATH) && hwemu__empty(path)) {
        if (hwemu__fd_fake(dirfd, &f)) {
            hwemu__fill_statx(sx, &f);
            return 0;
        }
    } else {
        hwemu_t *e = NULL;
        hwemu__path_t k = hwemu__classify_at(dirfd, path, &e);
        if (k) {
            hwemu__fake(e, k, &f);
            hwemu__fill_statx(sx, &f);
            return 0;
        }
    }
    return REAL(statx, dirfd, path, flags, mask, sx);
}

/* ------------------------------------------------------------------ access, realpath */

static int hwemu__access_emulated(hwemu__path_t k, int mode)
{
    if (k == HWEMU_PATH_SYSDEV && (mode & (W_OK | X_OK)))
        return hwemu__fail(EACCES);
    if (k != HWEMU_PATH_SYSDEV && (mode & X_OK))
        return hwemu__fail(EACCES);
    return 0;
}

HWEMU_EXPORT int access(const char *path, int mode)
{
    hwemu__path_t k = hwemu__classify(path, NULL);
    if (k)
        return hwemu__access_emulated(k, mode);
    return REAL(access, path, mode);
}

HWEMU_EXPORT int euidaccess(const char *path, int mode)
{
    hwemu__path_t k = hwemu__classify(path, NULL);
    if (k)
        return hwemu__access_emulated(k, mode);
    return REAL(euidaccess, path, mode);
}

HWEMU_EXPORT int eaccess(const char *path, int mode)
{
    return euidaccess(path, mode);
}

HWEMU_EXPORT int faccessat(int dirfd, const char *path, int mode, int flags)
{
    hwemu__path_t k = hwemu__classify_at(dirfd, path, NULL);
    if (k)
        return hwemu__access_emulated(k, mode);
    return REAL(faccessat, dirfd, path, mode, flags);
}

HWEMU_EXPORT char *realpath(const char *restrict path, char *restrict resolved)
{
    hwemu__path_t k = hwemu__classify(path, NULL);
    if (!k) {
        hwemu__resolve();
        if (!real.realpath) {
            errno = ENOSYS;
            return NULL;
        }
        return real.realpath(path, resolved);
    }
    char buf[PATH_MAX];
    if (!hwemu__abspath(AT_FDCWD, path, buf, sizeof buf)) {
        errno = ENAMETOOLONG;
        return NULL;
    }
    if (resolved) {
        memcpy(resolved, buf, strlen(buf) + 1);
        return resolved;
    }
    return strdup(buf);
}

/* ------------------------------------------------------------------ extended attributes */

/* Device nodes carry none (ls -l asks, for ACLs and security labels). */
HWEMU_EXPORT ssize_t getxattr(const char *path, const char *name, void *value, size_t size)
{
    if (hwemu__classify(path, NULL))
        return hwemu__fail(ENODATA);
    static ssize_t (*next)(const char *, const char *, void *, size_t);
    if (!next)
        *(void **)(&next) = hwemu__sym("getxattr");
    return next ? next(path, name, value, size) : hwemu__fail(ENOSYS);
}

HWEMU_EXPORT ssize_t lgetxattr(const char *path, const char *name, void *value, size_t size)
{
    if (hwemu__classify(path, NULL))
        return hwemu__fail(ENODATA);
    static ssize_t (*next)(const char *, const char *, void *, size_t);
    if (!next)
        *(void **)(&next) = hwemu__sym("lgetxattr");
    return next ? next(path, name, value, size) : hwemu__fail(ENOSYS);
}

/* ------------------------------------------------------------------ scandir("/dev") */

/* Whether `dir` is /dev (where libgpiod's chip iterator looks). */
static bool hwemu__is_dev_dir(const char *dir, hwemu_t **ep)
{
    if (!dir || !strstr(dir, "dev"))
        return false;
    hwemu_t *e = hwemu_get();
    char buf[PATH_MAX];
    if (!e || !hwemu__abspath(AT_FDCWD, dir, buf, sizeof buf))
        return false;
    *ep = e;
    return strcmp(buf, "/dev") == 0;
}

/* Adds our two device nodes to a scandir() result of /dev, through the
 * caller's filter and sort. One body for struct dirent and dirent64. */
#define HWEMU__SCANDIR_ADD(DIRENT, e, list, n, filter, compar)                                     \
    do {                                                                                           \
        char names_[2][40];                                                                        \
        snprintf(names_[0], sizeof names_[0], "%s", (e)->cfg.gpiochip);                            \
        snprintf(names_[1], sizeof names_[1], "i2c-%d", (e)->cfg.i2c_bus);                         \
        for (int i_ = 0; i_ < 2; i_++) {                                                           \
            bool have_ = false;                                                                    \
            for (int j_ = 0; j_ < (n); j_++)                                                       \
                have_ |= strcmp((*(list))[j_]->d_name, names_[i_]) == 0;                           \
            if (have_)                                                                             \
                continue;                                                                          \
            DIRENT *d_ = calloc(1, sizeof *d_);                                                    \
            if (!d_)                                                                               \
                break;                                                                             \
            d_->d_ino = (ino_t)(i_ ? 4000 + (e)->cfg.i2c_bus : 5000 + (e)->cfg.gpiochip_num);      \
            d_->d_reclen = sizeof *d_;                                                             \
            d_->d_type = DT_CHR;                                                                   \
            snprintf(d_->d_name, sizeof d_->d_name, "%s", names_[i_]);                             \
            if ((filter) && !(filter)(d_)) {                                                       \
                free(d_);                                                                          \
                continue;                                                                          \
            }                                                                                      \
            DIRENT **grown_ = realloc(*(list), ((size_t)(n) + 1) * sizeof *grown_);                \
            if (!grown_) {                                                                         \
                free(d_);                                                                          \
                break;                                                                             \
            }                                                                                      \
            *(list) = grown_;                                                                      \
            (*(list))[(n)++] = d_;                                                                 \
        }                                                                                          \
        if (compar)                                                                                \
            qsort(*(list), (size_t)(n), sizeof **(list),                                           \
                  (int (*)(const void *, const void *))(void (*)(void))(compar));                  \
    } while (0)

HWEMU_EXPORT int scandir(const char *restrict dir, struct dirent ***restrict list,
                         int (*filter)(const struct dirent *),
                         int (*compar)(const struct dirent **, const struct dirent **))
{
    hwemu__resolve();
    if (!real.scandir)
        return hwemu__fail(ENOSYS);
    hwemu_t *e = NULL;
    int n = real.scandir(dir, list, filter, compar);
    if (n < 0 || !hwemu__is_dev_dir(dir, &e))
        return n;
    HWEMU__SCANDIR_ADD(struct dirent, e, list, n, filter, compar);
    return n;
}

HWEMU_EXPORT int scandir64(const char *restrict dir, struct dirent64 ***restrict list,
                           int (*filter)(const struct dirent64 *),
                           int (*compar)(const struct dirent64 **, const struct dirent64 **))
{
    hwemu__resolve();
    if (!real.scandir64)
        return hwemu__fail(ENOSYS);
    hwemu_t *e = NULL;
    int n = real.scandir64(dir, list, filter, compar);
    if (n < 0 || !hwemu__is_dev_dir(dir, &e))
        return n;
    HWEMU__SCANDIR_ADD(struct dirent64, e, list, n, filter, compar);
    return n;
}
