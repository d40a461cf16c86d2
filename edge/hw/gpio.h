/* gpio.h: the edge's GPIO lines through libgpiod 1.6 (the kernel's GPIO
 * character device, v1 uAPI): enable outputs and an edge-event input.
 *
 * Lines are named by chip and offset in the config (gpio_chip = gpiochip0,
 * charge_enable_line = 17). A chip may be given as its name ("gpiochip0"),
 * its path, its number or its label ("pinctrl-bcm2711"); libgpiod's
 * gpiod_chip_open_lookup() resolves it.
 *
 * Outputs are requested with their INACTIVE level as the initial value, so
 * a start never pulses an enable; `active_low` makes libgpiod invert the
 * physical level (an active-low enable is driven low to enable), and the
 * rest of the code only speaks of active and inactive.
 *
 * Errors are negative EMS_E* codes with a sentence in `err` that names the
 * chip and the line and the likely fix (permissions, a line in use).
 */
#ifndef EMS_HW_GPIO_H
#define EMS_HW_GPIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gpiod_chip;
struct gpiod_line;

/* An open chip: owns the libgpiod handle; lines borrow it. */
typedef struct {
    struct gpiod_chip *chip;
    char name[64]; /* as configured, for messages */
} ems_gpio_chip_t;

/* Opens `descr` (name, path, number or label). 0 or EMS_ENOENT / EMS_EPERM /
 * EMS_EIO with err set. */
int ems_gpio_chip_open(ems_gpio_chip_t *c, const char *descr, char *err, size_t cap);
/* Closes the chip; every line of it must be closed first. Idempotent. */
void ems_gpio_chip_close(ems_gpio_chip_t *c);

/* An output line. */
typedef struct {
    struct gpiod_line *line;
    unsigned offset;
    bool active_low;
    bool active; /* the last level set */
} ems_gpio_out_t;

/* Requests line `offset` of chip as an output, inactive. `consumer` shows
 * in gpioinfo. 0 or EMS_EINVAL (no such line), EMS_EAGAIN (in use by
 * another consumer), EMS_EPERM, EMS_EIO; err names chip and line. */
int ems_gpio_out_open(ems_gpio_out_t *o, ems_gpio_chip_t *c, unsigned offset, bool active_low,
                      const char *consumer, char *err, size_t cap);
/* Drives the line active or inactive. 0 or EMS_EIO. */
int ems_gpio_out_set(ems_gpio_out_t *o, bool active);
/* Reads back the logical level the kernel reports (for --probe). 0/1, or
 * EMS_EIO. */
int ems_gpio_out_get(ems_gpio_out_t *o);
/* Releases the line; the kernel keeps driving its last level on most
 * chips, so callers set it inactive first (docs/hardware.md). Idempotent. */
void ems_gpio_out_close(ems_gpio_out_t *o);

/* An input line delivering rising-edge events with kernel timestamps. */
typedef struct {
    struct gpiod_line *line;
    unsigned offset;
    int fd; /* poll it for readability; -1 when closed */
} ems_gpio_edges_t;

int ems_gpio_edges_open(ems_gpio_edges_t *e, ems_gpio_chip_t *c, unsigned offset,
                        const char *consumer, char *err, size_t cap);
/* Reads the events that are waiting (without blocking) and stores the
 * timestamps (CLOCK_MONOTONIC ns, as the kernel took them) of the rising
 * edges into ts[0..max). Returns their count (0 when none is waiting), or
 * EMS_EIO. */
int ems_gpio_edges_read(ems_gpio_edges_t *e, uint64_t *ts, size_t max);
void ems_gpio_edges_close(ems_gpio_edges_t *e);

#endif
