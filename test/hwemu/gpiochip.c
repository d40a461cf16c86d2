/* gpiochip.c: one GPIO chip behind /dev/gpiochipN, with the v1 character
 * device uAPI that libgpiod 1.6 uses (include/uapi/linux/gpio.h).
 *
 * Lines: the chip has gpio_lines lines named "GPIO<n>". A line handle
 * (GPIO_GET_LINEHANDLE_IOCTL) requests up to 64 lines as inputs or outputs
 * and comes back as a new fd (an eventfd: only its ioctls matter); a line
 * already requested answers EBUSY; closing the last fd of a request
 * releases its lines, which become inputs again like the bcm2835 does.
 * An undriven line reads its board level: the enable lines their inactive
 * level (the installer's pull resistor), the zero-crossing line the grid's
 * square wave, the others their requested bias (pull-up 1, else 0).
 *
 * Events: a line event (GPIO_GET_LINEEVENT_IOCTL) comes back as a timerfd,
 * armed for the moment the next edge is due, so poll/epoll/select report it
 * readable exactly while events are pending, with no thread. read() (the
 * interposer sends it here) moves the edges that are due into the 16-deep
 * kernel FIFO (a full FIFO drops its oldest event) and returns whole
 * struct gpioevent_data records: CLOCK_MONOTONIC timestamps in ns and
 * GPIOEVENT_EVENT_RISING_EDGE / FALLING_EDGE ids, logical (an active-low
 * request swaps them, like the kernel). Re-arming the timer resets its
 * expiry count, which is what makes the fd unreadable again.
 *
 * The zero-crossing line rises once per grid cycle at the plant's grid
 * frequency (or the control file's freq=) and falls half a period later;
 * freq_jitter_us moves each edge (Gaussian, at most T/8), missing_edges=N
 * loses every Nth event, glitches=N adds a short pulse a quarter period
 * after every Nth event (one extra event of each requested kind), and there
 * are no edges during a grid outage. A control change reaches a process at
 * its next emulated access; a process that only sleeps in poll() on an
 * event fd sees it when its next edge is due.
 */
#include "hwemu.h"

#include <errno.h>
#include <linux/gpio.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define GPIO__FIFO 16
#define GPIO__FUTURE 8
#define GPIO__VALID_HFLAGS                                                                         \
    (GPIOHANDLE_REQUEST_INPUT | GPIOHANDLE_REQUEST_OUTPUT | GPIOHANDLE_REQUEST_ACTIVE_LOW |        \
     GPIOHANDLE_REQUEST_OPEN_DRAIN | GPIOHANDLE_REQUEST_OPEN_SOURCE |                              \
     GPIOHANDLE_REQUEST_BIAS_PULL_UP | GPIOHANDLE_REQUEST_BIAS_PULL_DOWN |                         \
     GPIOHANDLE_REQUEST_BIAS_DISABLE)
#define GPIO__BIAS_FLAGS                                                                           \
    (GPIOHANDLE_REQUEST_BIAS_PULL_UP | GPIOHANDLE_REQUEST_BIAS_PULL_DOWN |                         \
     GPIOHANDLE_REQUEST_BIAS_DISABLE)

typedef struct {
    int64_t t;
    uint32_t id;
} gpio__event_t;

struct hwemu_gpio_req {
    hwemu_gpio_req_t *next;
    int fd;
    bool is_event;
    unsigned n;
    unsigned offsets[GPIOHANDLES_MAX];
    char consumer[32];

    /* events */
    uint32_t eflags;
    gpio__event_t fifo[GPIO__FIFO];
    unsigned head, count;
    gpio__event_t future[GPIO__FUTURE]; /* generated, not yet due; sorted */
    unsigned nfuture;
    bool synced;
    int64_t next_nominal_ns;
    bool next_is_rise;
    uint64_t n_edges;
    unsigned long overflow;
    bool released; /* its last fd is closed; freed when no call uses it */
};

/* ------------------------------------------------------------------ levels */

static double gpio__zc_freq(const hwemu_t *e)
{
    if (e->ctl.grid_outage || e->phys.grid_hz <= 0)
        return 0.0;
    return e->phys.grid_hz; /* with the control file's freq= applied */
}

int hwemu_gpio_level(hwemu_t *e, unsigned off)
{
    const hwemu_config_t *c = &e->cfg;
    if (off >= c->gpio_lines)
        return 0;
    const hwemu_line_t *l = &e->lines[off];
    if (l->requested && l->output)
        return l->value;
    if (off == c->charge_line || off == c->discharge_line)
        return c->enable_active_low ? 1 : 0;
    if (off == c->zero_cross_line) {
        double f = gpio__zc_freq(e);
        if (f <= 0)
            return 0;
        double cycles = (double)(hwemu_mono_ns() - e->t0_ns) * 1e-9 * f;
        return cycles - floor(cycles) < 0.5;
    }
    return l->requested && (l->flags & GPIOHANDLE_REQUEST_BIAS_PULL_UP) ? 1 : 0;
}

/* ------------------------------------------------------------------ chip ioctls */

int hwemu_gpio_chipinfo(hwemu_t *e, void *arg)
{
    struct gpiochip_info *info = arg;
    memset(info, 0, sizeof *info);
    snprintf(info->name, sizeof info->name, "%s", e->cfg.gpiochip);
    snprintf(info->label, sizeof info->label, "ems-hwemu");
    info->lines = e->cfg.gpio_lines;
    return 0;
}

int hwemu_gpio_lineinfo(hwemu_t *e, void *arg)
{
    struct gpioline_info *info = arg;
    unsigned off = info->line_offset;
    if (off >= e->cfg.gpio_lines)
        return -EINVAL;
    const hwemu_line_t *l = &e->lines[off];
    memset(info, 0, sizeof *info);
    info->line_offset = off;
    snprintf(info->name, sizeof info->name, "GPIO%u", off);
    if (l->requested) {
        info->flags |= GPIOLINE_FLAG_KERNEL;
        if (l->output)
            info->flags |= GPIOLINE_FLAG_IS_OUT;
        if (l->active_low)
            info->flags |= GPIOLINE_FLAG_ACTIVE_LOW;
        if (l->flags & GPIOHANDLE_REQUEST_OPEN_DRAIN)
            info->flags |= GPIOLINE_FLAG_OPEN_DRAIN;
        if (l->flags & GPIOHANDLE_REQUEST_OPEN_SOURCE)
            info->flags |= GPIOLINE_FLAG_OPEN_SOURCE;
        if (l->flags & GPIOHANDLE_REQUEST_BIAS_PULL_UP)
            info->flags |= GPIOLINE_FLAG_BIAS_PULL_UP;
        if (l->flags & GPIOHANDLE_REQUEST_BIAS_PULL_DOWN)
            info->flags |= GPIOLINE_FLAG_BIAS_PULL_DOWN;
        if (l->flags & GPIOHANDLE_REQUEST_BIAS_DISABLE)
            info->flags |= GPIOLINE_FLAG_BIAS_DISABLE;
        snprintf(info->consumer, sizeof info->consumer, "%s", l->consumer[0] ? l->consumer : "?");
    }
    return 0;
}

/* The kernel's checks on request flags (gpiolib-cdev.c, v1). */
static int gpio__check_hflags(uint32_t f)
{
    if (f & ~(uint32_t)GPIO__VALID_HFLAGS)
        return -EINVAL;
    if ((f & GPIOHANDLE_REQUEST_INPUT) && (f & GPIOHANDLE_REQUEST_OUTPUT))
        return -EINVAL;
    if ((f & GPIOHANDLE_REQUEST_OPEN_DRAIN) && (f & GPIOHANDLE_REQUEST_OPEN_SOURCE))
        return -EINVAL;
    if ((f & (GPIOHANDLE_REQUEST_OPEN_DRAIN | GPIOHANDLE_REQUEST_OPEN_SOURCE)) &&
        !(f & GPIOHANDLE_REQUEST_OUTPUT))
        return -EINVAL;
    if ((f & GPIO__BIAS_FLAGS) && !(f & (GPIOHANDLE_REQUEST_INPUT | GPIOHANDLE_REQUEST_OUTPUT)))
        return -EINVAL;
    unsigned nbias = !!(f & GPIOHANDLE_REQUEST_BIAS_PULL_UP) +
                     !!(f & GPIOHANDLE_REQUEST_BIAS_PULL_DOWN) +
                     !!(f & GPIOHANDLE_REQUEST_BIAS_DISABLE);
    if (nbias > 1)
        return -EINVAL;
    return 0;
}

static bool gpio__is_enable(const hwemu_t *e, unsigned off)
{
    return off == e->cfg.charge_line || off == e->cfg.discharge_line;
}

/* Applies flags (and output values, logical) to the lines of a request. */
static void gpio__configure(hwemu_t *e, hwemu_gpio_req_t *r, uint32_t f, const uint8_t *vals)
{
    for (unsigned i = 0; i < r->n; i++) {
        hwemu_line_t *l = &e->lines[r->offsets[i]];
        bool al = f & GPIOHANDLE_REQUEST_ACTIVE_LOW;
        l->requested = true;
        l->req = r;
        l->flags = f;
        l->active_low = al;
        if (f & GPIOHANDLE_REQUEST_OUTPUT) {
            l->output = true;
            l->value = (uint8_t)((vals && vals[i] ? 1 : 0) ^ (al ? 1 : 0));
        } else if (f & GPIOHANDLE_REQUEST_INPUT) {
            l->output = false;
        }
        /* Neither flag ("as is"): the direction stays what it was. */
        snprintf(l->consumer, sizeof l->consumer, "%s", r->consumer);
    }
}

static hwemu_gpio_req_t *gpio__new_req(hwemu_t *e, const uint32_t *offs, unsigned n,
                                       const char *label, int *err)
{
    if (n == 0 || n > GPIOHANDLES_MAX) {
        *err = -EINVAL;
        return NULL;
    }
    for (unsigned i = 0; i < n; i++) {
        if (offs[i] >= e->cfg.gpio_lines) {
            *err = -EINVAL;
            return NULL;
        }
        if (e->lines[offs[i]].requested) {
            *err = -EBUSY;
            return NULL;
        }
        for (unsigned j = 0; j < i; j++)
            if (offs[j] == offs[i]) {
                *err = -EBUSY;
                return NULL;
            }
    }
    hwemu_gpio_req_t *r = calloc(1, sizeof *r);
    if (!r) {
        *err = -ENOMEM;
        return NULL;
    }
    r->n = n;
    for (unsigned i = 0; i < n; i++)
        r->offsets[i] = offs[i];
    snprintf(r->consumer, sizeof r->consumer, "%.31s", label);
    r->fd = -1;
    return r;
}

int hwemu_gpio_linehandle(hwemu_t *e, void *arg, hwemu_gpio_req_t **out)
{
    struct gpiohandle_request *hr = arg;
    int rc = gpio__check_hflags(hr->flags);
    if (rc)
        return rc;
    char label[sizeof hr->consumer_label + 1];
    memcpy(label, hr->consumer_label, sizeof hr->consumer_label);
    label[sizeof hr->consumer_label] = '\0';
    hwemu_gpio_req_t *r = gpio__new_req(e, hr->lineoffsets, hr->lines, label, &rc);
    if (!r)
        return rc;
    r->fd = eventfd(0, EFD_CLOEXEC);
    if (r->fd < 0) {
        rc = -errno;
        free(r);
        return rc;
    }
    gpio__configure(e, r, hr->flags, hr->default_values);
    r->next = e->reqs;
    e->reqs = r;
    hr->fd = r->fd;
    *out = r;
    hwemu_log(e, "gpio linehandle %u line(s) from %u flags 0x%x consumer '%s' -> fd %d", r->n,
              r->offsets[0], hr->flags, r->consumer, r->fd);
    hwemu_outputs_changed(e);
    return 0;
}

static void gpio__arm(hwemu_t *e, hwemu_gpio_req_t *r);
static void gpio__pump(hwemu_t *e, hwemu_gpio_req_t *r, int64_t now);

int hwemu_gpio_lineevent(hwemu_t *e, void *arg, hwemu_gpio_req_t **out)
{
    struct gpioevent_request *er = arg;
    uint32_t hf = er->handleflags;
    int rc = gpio__check_hflags(hf);
    if (rc)
        return rc;
    if (hf & (GPIOHANDLE_REQUEST_OUTPUT | GPIOHANDLE_REQUEST_OPEN_DRAIN |
              GPIOHANDLE_REQUEST_OPEN_SOURCE))
        return -EINVAL;
    if (er->eventflags & ~(uint32_t)GPIOEVENT_REQUEST_BOTH_EDGES)
        return -EINVAL;
    char label[sizeof er->consumer_label + 1];
    memcpy(label, er->consumer_label, sizeof er->consumer_label);
    label[sizeof er->consumer_label] = '\0';
    uint32_t off = er->lineoffset;
    hwemu_gpio_req_t *r = gpio__new_req(e, &off, 1, label, &rc);
    if (!r)
        return rc;
    r->fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    if (r->fd < 0) {
        rc = -errno;
        free(r);
        return rc;
    }
    r->is_event = true;
    r->eflags = er->eventflags;
    gpio__configure(e, r, hf | GPIOHANDLE_REQUEST_INPUT, NULL);
    r->next = e->reqs;
    e->reqs = r;
    er->fd = r->fd;
    *out = r;
    hwemu_log(e, "gpio lineevent line %u flags 0x%x edges 0x%x consumer '%s' -> fd %d", off, hf,
              r->eflags, r->consumer, r->fd);
    gpio__pump(e, r, e->phys.now_ns);
    gpio__arm(e, r);
    return 0;
}

/* ------------------------------------------------------------------ handle ioctls */

static int gpio__get_values(hwemu_t *e, hwemu_gpio_req_t *r, struct gpiohandle_data *d)
{
    memset(d, 0, sizeof *d);
    for (unsigned i = 0; i < r->n; i++) {
        const hwemu_line_t *l = &e->lines[r->offsets[i]];
        d->values[i] = (uint8_t)(hwemu_gpio_level(e, r->offsets[i]) ^ (l->active_low ? 1 : 0));
    }
    return 0;
}

static int gpio__set_values(hwemu_t *e, hwemu_gpio_req_t *r, const struct gpiohandle_data *d)
{
    if (r->is_event || !e->lines[r->offsets[0]].output)
        return -EPERM;
    bool enables = false;
    for (unsigned i = 0; i < r->n; i++) {
        hwemu_line_t *l = &e->lines[r->offsets[i]];
        l->value = (uint8_t)((d->values[i] ? 1 : 0) ^ (l->active_low ? 1 : 0));
        enables |= gpio__is_enable(e, r->offsets[i]);
    }
    hwemu_log(e, "gpio set fd %d: line %u = %u%s", r->fd, r->offsets[0], d->values[0],
              r->n > 1 ? " ..." : "");
    if (enables)
        hwemu_outputs_changed(e);
    return 0;
}

static int gpio__set_config(hwemu_t *e, hwemu_gpio_req_t *r, const struct gpiohandle_config *c)
{
    if (r->is_event)
        return -EINVAL;
    int rc = gpio__check_hflags(c->flags);
    if (rc)
        return rc;
    gpio__configure(e, r, c->flags, c->default_values);
    hwemu_log(e, "gpio set-config fd %d flags 0x%x", r->fd, c->flags);
    hwemu_outputs_changed(e);
    return 0;
}

int hwemu_gpio_req_ioctl(hwemu_t *e, hwemu_gpio_req_t *r, unsigned long request, void *arg)
{
    bool known = request == GPIOHANDLE_GET_LINE_VALUES_IOCTL ||
                 request == GPIOHANDLE_SET_LINE_VALUES_IOCTL ||
                 request == GPIOHANDLE_SET_CONFIG_IOCTL;
    if (known && !arg)
        return -EFAULT;
    switch (request) {
    case GPIOHANDLE_GET_LINE_VALUES_IOCTL:
        return gpio__get_values(e, r, arg);
    case GPIOHANDLE_SET_LINE_VALUES_IOCTL:
        return gpio__set_values(e, r, arg);
    case GPIOHANDLE_SET_CONFIG_IOCTL:
        return gpio__set_config(e, r, arg);
    default:
        return -EINVAL;
    }
}

/* ------------------------------------------------------------------ events */

static int64_t gpio__jitter_ns(hwemu_t *e, double period_ns)
{
    if (e->ctl.jitter_us <= 0)
        return 0;
    double j = e->ctl.jitter_us * 1000.0 * ems_rng_normal(&e->rng);
    double lim = period_ns / 8.0;
    return (int64_t)fmax(-lim, fmin(lim, j));
}

static void gpio__future_add(hwemu_gpio_req_t *r, int64_t t, uint32_t id)
{
    if (r->nfuture >= GPIO__FUTURE)
        return;
    unsigned i = r->nfuture++;
    while (i > 0 && r->future[i - 1].t > t) {
        r->future[i] = r->future[i - 1];
        i--;
    }
    r->future[i] = (gpio__event_t){.t = t, .id = id};
}

static bool gpio__wanted(const hwemu_gpio_req_t *r, uint32_t id)
{
    return (id == GPIOEVENT_EVENT_RISING_EDGE && (r->eflags & GPIOEVENT_REQUEST_RISING_EDGE)) ||
           (id == GPIOEVENT_EVENT_FALLING_EDGE && (r->eflags & GPIOEVENT_REQUEST_FALLING_EDGE));
}

/* The logical event id of a physical edge for this request. */
static uint32_t gpio__id(const hwemu_t *e, const hwemu_gpio_req_t *r, bool phys_rise)
{
    bool al = e->lines[r->offsets[0]].active_low;
    return phys_rise != al ? GPIOEVENT_EVENT_RISING_EDGE : GPIOEVENT_EVENT_FALLING_EDGE;
}

/* The next nominal edge of the square wave, with what the control file does
 * to it, into r->future. */
static void gpio__generate(hwemu_t *e, hwemu_gpio_req_t *r, double f)
{
    double period = 1e9 / f;
    int64_t t_nom = r->next_nominal_ns;
    bool rise = r->next_is_rise;
    r->next_nominal_ns += (int64_t)(period / 2.0);
    r->next_is_rise = !rise;
    uint32_t id = gpio__id(e, r, rise);
    if (!gpio__wanted(r, id))
        return;
    r->n_edges++;
    const hwemu_control_t *c = &e->ctl;
    if (!(c->missing_edges && r->n_edges % c->missing_edges == 0))
        gpio__future_add(r, t_nom + gpio__jitter_ns(e, period), id);
    if (c->glitches && r->n_edges % c->glitches == 0) {
        /* A 50 us pulse against the level, a quarter period later. */
        int64_t tg = t_nom + (int64_t)(period / 4.0);
        uint32_t first = gpio__id(e, r, !rise), second = gpio__id(e, r, rise);
        if (gpio__wanted(r, first))
            gpio__future_add(r, tg, first);
        if (gpio__wanted(r, second))
            gpio__future_add(r, tg + 50000, second);
    }
}

static void gpio__fifo_push(hwemu_gpio_req_t *r, gpio__event_t ev)
{
    if (r->count == GPIO__FIFO) { /* full: the oldest goes */
        r->head = (r->head + 1) % GPIO__FIFO;
        r->count--;
        r->overflow++;
    }
    r->fifo[(r->head + r->count) % GPIO__FIFO] = ev;
    r->count++;
}

/* Moves every edge that is due by `now` into the FIFO and keeps the next
 * one computed. */
static void gpio__pump(hwemu_t *e, hwemu_gpio_req_t *r, int64_t now)
{
    if (!r->is_event || r->released)
        return;
    double f = r->offsets[0] == e->cfg.zero_cross_line ? gpio__zc_freq(e) : 0.0;
    if (f <= 0) {
        r->nfuture = 0;
        r->synced = false;
        return;
    }
    int64_t period = (int64_t)(1e9 / f);
    if (!r->synced) {
        r->synced = true;
        r->next_nominal_ns = now + period / 2;
        r->next_is_rise = true;
    }
    /* Long unread: only the last FIFO's worth can survive anyway. */
    if (now - r->next_nominal_ns > 2 * (int64_t)GPIO__FIFO * period) {
        int64_t skip = (now - r->next_nominal_ns) / period - GPIO__FIFO - 2;
        r->next_nominal_ns += skip * period;
    }
    for (int guard = 0; guard < 100000; guard++) {
        if (r->nfuture > 0 && r->future[0].t <= now) {
            gpio__fifo_push(r, r->future[0]);
            memmove(r->future, r->future + 1, (r->nfuture - 1) * sizeof r->future[0]);
            r->nfuture--;
            continue;
        }
        if (r->nfuture > 0 || r->eflags == 0 || r->next_nominal_ns > now + 1000000000LL)
            break;
        gpio__generate(e, r, f);
    }
}

/* Readable now if the FIFO holds events, at the next edge otherwise,
 * never if none is coming. */
static void gpio__arm(hwemu_t *e, hwemu_gpio_req_t *r)
{
    (void)e;
    if (r->released)
        return;
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    int64_t t = 0;
    if (r->count > 0)
        t = 1; /* absolute 1 ns: long past, expires at once */
    else if (r->nfuture > 0)
        t = r->future[0].t;
    else if (r->synced && r->eflags)
        t = r->next_nominal_ns; /* nothing for a second: look again then */
    its.it_value.tv_sec = t / 1000000000LL;
    its.it_value.tv_nsec = t % 1000000000LL;
    timerfd_settime(r->fd, TFD_TIMER_ABSTIME, &its, NULL);
}

void hwemu_gpio_rearm_all(hwemu_t *e)
{
    int64_t now = hwemu_mono_ns();
    /* The grid keeps its phase: the next edge or two, already generated,
     * keep the old settings; an outage (or its end) resynchronises in
     * gpio__pump. */
    for (hwemu_gpio_req_t *r = e->reqs; r; r = r->next) {
        if (!r->is_event)
            continue;
        gpio__pump(e, r, now);
        gpio__arm(e, r);
    }
}

long hwemu_gpio_event_read(hwemu_t *e, hwemu_gpio_req_t *r, void *buf, size_t len, bool nonblock)
{
    if (!r->is_event)
        return -EINVAL;
    if (len < sizeof(struct gpioevent_data))
        return -EINVAL;
    for (;;) {
        if (r->released)
            return -EBADF;
        gpio__pump(e, r, hwemu_mono_ns());
        if (r->count > 0)
            break;
        gpio__arm(e, r);
        if (nonblock)
            return -EAGAIN;
        /* Block like the kernel, waking at the next edge or every 100 ms to
         * see control changes. */
        struct pollfd p = {.fd = r->fd, .events = POLLIN};
        hwemu_unlock();
        int n = poll(&p, 1, 100);
        hwemu_lock();
        if (n < 0 && errno == EINTR)
            return -EINTR;
        if (r->released || (n > 0 && (p.revents & POLLNVAL)))
            return -EBADF;
        hwemu_tick(e);
    }
    size_t max = len / sizeof(struct gpioevent_data), k = 0;
    struct gpioevent_data *out = buf;
    while (k < max && r->count > 0) {
        gpio__event_t ev = r->fifo[r->head];
        r->head = (r->head + 1) % GPIO__FIFO;
        r->count--;
        struct gpioevent_data d;
        memset(&d, 0, sizeof d);
        d.timestamp = (uint64_t)ev.t;
        d.id = ev.id;
        memcpy(&out[k++], &d, sizeof d);
    }
    e->events_sent += k;
    gpio__pump(e, r, hwemu_mono_ns());
    gpio__arm(e, r);
    return (long)(k * sizeof(struct gpioevent_data));
}

/* ------------------------------------------------------------------ release */

static void gpio__free_lines(hwemu_t *e, hwemu_gpio_req_t *r)
{
    for (unsigned i = 0; i < r->n; i++) {
        hwemu_line_t *l = &e->lines[r->offsets[i]];
        if (l->req == r)
            memset(l, 0, sizeof *l);
    }
}

void hwemu_gpio_req_release(hwemu_t *e, hwemu_gpio_req_t *r)
{
    if (r->released)
        return;
    for (hwemu_gpio_req_t **pp = &e->reqs; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    }
    hwemu_log(e, "gpio release fd %d (%u line(s) from %u%s)", r->fd, r->n, r->offsets[0],
              r->overflow ? ", the FIFO overflowed" : "");
    gpio__free_lines(e, r);
    r->released = true;
    r->fd = -1;
    hwemu_outputs_changed(e);
}

void hwemu_gpio_req_free(hwemu_gpio_req_t *r)
{
    free(r);
}

void hwemu_gpio_release_all(hwemu_t *e)
{
    /* The requests stay allocated: their fds may still be closed later. */
    for (hwemu_gpio_req_t *r = e->reqs; r; r = r->next)
        gpio__free_lines(e, r);
}
