/* gpio.c: GPIO lines through libgpiod 1.6 (see gpio.h). */
#include "gpio.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <gpiod.h>
#include <stdio.h>
#include <string.h>

static int gpio__errno(int e)
{
    switch (e) {
    case ENOENT:
    case ENODEV:
        return EMS_ENOENT;
    case EACCES:
    case EPERM:
        return EMS_EPERM;
    case EBUSY:
        return EMS_EAGAIN;
    case EINVAL:
        return EMS_EINVAL;
    default:
        return EMS_EIO;
    }
}

int ems_gpio_chip_open(ems_gpio_chip_t *c, const char *descr, char *err, size_t cap)
{
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", descr);
    errno = 0;
    c->chip = gpiod_chip_open_lookup(descr);
    if (!c->chip) {
        int e = errno ? errno : ENOENT;
        snprintf(err, cap, "gpio chip %s: %s%s", descr, strerror(e),
                 e == EACCES || e == EPERM ? " (add the user to group gpio)"
                 : e == ENOENT             ? " (gpiodetect lists the chips)"
                                           : "");
        return gpio__errno(e);
    }
    return 0;
}

void ems_gpio_chip_close(ems_gpio_chip_t *c)
{
    if (c->chip)
        gpiod_chip_close(c->chip);
    c->chip = NULL;
}

static struct gpiod_line *gpio__line(ems_gpio_chip_t *c, unsigned offset, char *err, size_t cap)
{
    struct gpiod_line *l = gpiod_chip_get_line(c->chip, offset);
    if (!l)
        snprintf(err, cap, "gpio chip %s: no line %u (it has %u lines)", c->name, offset,
                 gpiod_chip_num_lines(c->chip));
    return l;
}

static int gpio__request_failed(ems_gpio_chip_t *c, unsigned offset, struct gpiod_line *l,
                                char *err, size_t cap)
{
    int e = errno ? errno : EIO;
    const char *user = gpiod_line_consumer(l);
    snprintf(err, cap, "gpio chip %s line %u: %s%s%s%s", c->name, offset, strerror(e),
             e == EBUSY ? " (in use by '" : "", e == EBUSY ? (user ? user : "another program") : "",
             e == EBUSY ? "'; gpioinfo shows who holds it)" : "");
    return gpio__errno(e);
}

int ems_gpio_out_open(ems_gpio_out_t *o, ems_gpio_chip_t *c, unsigned offset, bool active_low,
                      const char *consumer, char *err, size_t cap)
{
    memset(o, 0, sizeof *o);
    o->offset = offset;
    o->active_low = active_low;
    struct gpiod_line *l = gpio__line(c, offset, err, cap);
    if (!l)
        return EMS_EINVAL;
    errno = 0;
    int flags = active_low ? GPIOD_LINE_REQUEST_FLAG_ACTIVE_LOW : 0;
    if (gpiod_line_request_output_flags(l, consumer, flags, 0) < 0)
        return gpio__request_failed(c, offset, l, err, cap);
    o->line = l;
    return 0;
}

int ems_gpio_out_set(ems_gpio_out_t *o, bool active)
{
    if (!o->line)
        return EMS_ECLOSED;
    if (gpiod_line_set_value(o->line, active ? 1 : 0) < 0)
        return EMS_EIO;
    o->active = active;
    return 0;
}

int ems_gpio_out_get(ems_gpio_out_t *o)
{
    if (!o->line)
        return EMS_ECLOSED;
    int v = gpiod_line_get_value(o->line);
    return v < 0 ? EMS_EIO : v;
}

void ems_gpio_out_close(ems_gpio_out_t *o)
{
    if (o->line)
        gpiod_line_release(o->line);
    o->line = NULL;
}

int ems_gpio_edges_open(ems_gpio_edges_t *e, ems_gpio_chip_t *c, unsigned offset,
                        const char *consumer, char *err, size_t cap)
{
    memset(e, 0, sizeof *e);
    e->fd = -1;
    e->offset = offset;
    struct gpiod_line *l = gpio__line(c, offset, err, cap);
    if (!l)
        return EMS_EINVAL;
    errno = 0;
    if (gpiod_line_request_rising_edge_events(l, consumer) < 0)
        return gpio__request_failed(c, offset, l, err, cap);
    int fd = gpiod_line_event_get_fd(l);
    /* The loop reads only when poll says so, but a read must never block
     * the loop if the kernel disagrees. */
    int fl = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        snprintf(err, cap, "gpio chip %s line %u: event fd: %s", c->name, offset, strerror(errno));
        gpiod_line_release(l);
        return EMS_EIO;
    }
    e->line = l;
    e->fd = fd;
    return 0;
}

int ems_gpio_edges_read(ems_gpio_edges_t *e, uint64_t *ts, size_t max)
{
    if (!e->line)
        return EMS_ECLOSED;
    struct gpiod_line_event ev[16];
    size_t n = 0;
    while (n < max) {
        unsigned want = (unsigned)(max - n < 16 ? max - n : 16);
        int got = gpiod_line_event_read_fd_multiple(e->fd, ev, want);
        if (got < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? (int)n : EMS_EIO;
        for (int i = 0; i < got; i++)
            if (ev[i].event_type == GPIOD_LINE_EVENT_RISING_EDGE)
                ts[n++] = (uint64_t)ev[i].ts.tv_sec * 1000000000u + (uint64_t)ev[i].ts.tv_nsec;
        if ((unsigned)got < want)
            break;
    }
    return (int)n;
}

void ems_gpio_edges_close(ems_gpio_edges_t *e)
{
    if (e->line)
        gpiod_line_release(e->line);
    e->line = NULL;
    e->fd = -1;
}
