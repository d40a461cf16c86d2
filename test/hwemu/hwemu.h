/* hwemu.h: the insides of libemshwemu.so, an emulator of Linux's i2c-dev and
 * GPIO character devices for ems-edge's hardware back end (test/hwemu/README.md).
 *
 * The library is preloaded (LD_PRELOAD) into an unchanged program. hwemu.c
 * interposes the libc calls that reach /dev/i2c-N and /dev/gpiochipN (open,
 * ioctl, read, stat, ...) and hands them to this emulator; every other file
 * descriptor and path goes to the real libc. Behind it:
 *
 *   core.c      configuration, control file, time, the embedded plant
 *               (edge/plant.c), the emulated inverter, state file and log
 *   i2cbus.c    the bus: I2C_RDWR messages and SMBus transactions emulated
 *               over them, addressed to the chips below
 *   ina2xx.c    TI INA228 / INA226 battery monitor on the shunt
 *   tmp102.c    TI TMP102 pack temperature sensor
 *   ade7953.c   Analog Devices ADE7953 grid meter
 *   mcp4725.c   Microchip MCP4725 DAC: the inverter's power reference
 *   gpiochip.c  one GPIO chip with the v1 uAPI: line handles (the inverter's
 *               enable lines) and line events (the grid zero-crossing line)
 *
 * Conventions: functions return 0 (or a count) or a negative errno, which the
 * interposer turns into -1 and errno like the kernel would. All emulator
 * state sits behind one recursive lock (hwemu_lock); the interposer takes it
 * around every call it serves, so nothing below takes it again.
 */
#ifndef EMS_HWEMU_H
#define EMS_HWEMU_H

#include "plant.h"
#include "rng.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HWEMU_EXPORT __attribute__((visibility("default")))

#define HWEMU_MAX_CHIPS 8
#define HWEMU_MAX_LINES 512
#define HWEMU_NOADDR 0xFFFF

typedef struct hwemu hwemu_t;
typedef struct hwemu_chip hwemu_chip_t;
typedef struct hwemu_gpio_req hwemu_gpio_req_t;

/* ------------------------------------------------------------------ config */

typedef enum { HWEMU_MON_NONE = 0, HWEMU_MON_INA228, HWEMU_MON_INA226 } hwemu_monitor_t;

typedef struct {
    int i2c_bus;         /* /dev/i2c-N */
    char gpiochip[32];   /* gpiochipN */
    int gpiochip_num;    /* N */
    unsigned gpio_lines; /* lines of the chip */
    hwemu_monitor_t monitor;
    unsigned monitor_addr; /* HWEMU_NOADDR: left out */
    double shunt_ohms;
    double bus_divider; /* the monitor's bus input sees V / bus_divider */
    unsigned temp_addr;
    unsigned grid_addr;
    double grid_v_per_lsb, grid_a_per_lsb, grid_w_per_lsb;
    unsigned dac_addr;
    double dac_vref_v, dac_offset_v, dac_volts_per_w;
    unsigned dac_eeprom_code; /* the EEPROM's content at power-on (12 bits) */
    unsigned charge_line, discharge_line, zero_cross_line;
    bool enable_active_low;
    ems_plant_config_t plant;
    double plant_speed;
} hwemu_config_t;

/* Reads `path` into *c (defaults first). Returns 0, or -EINVAL after printing
 * "ems-hwemu: FILE:LINE: why" to stderr. */
int hwemu_config_load(hwemu_config_t *c, const char *path);

/* ------------------------------------------------------------------ control */

/* What the control file (EMS_HWEMU_CONTROL) currently says. */
typedef struct {
    bool silence[128];
    bool stuck[128];
    bool wrong_id[128];
    double forced_temp_c; /* NAN: the thermal model decides */
    double freq_hz;       /* NAN: the plant's grid frequency */
    double jitter_us;
    unsigned missing_edges; /* 0: none */
    unsigned glitches;      /* 0: none */
    bool grid_outage;
} hwemu_control_t;

/* ------------------------------------------------------------------ physics */

/* The physical quantities the chips measure, refreshed by hwemu_tick(). */
typedef struct {
    int64_t now_ns; /* CLOCK_MONOTONIC */
    double plant_s; /* simulated seconds since start */
    double batt_v;  /* at the terminals */
    double batt_a;  /* + = charging */
    double batt_w;
    double batt_temp_c;
    double soc;
    double grid_v;  /* 0 in an outage */
    double grid_w;  /* + = import */
    double grid_hz; /* 0 in an outage */
    double board_temp_c;
} hwemu_phys_t;

/* ------------------------------------------------------------------ chips */

typedef struct {
    const char *name;
    /* Back to the power-on state (a power cycle). */
    void (*reset)(hwemu_chip_t *c);
    /* One write message (a START, the address, len bytes). Returns 0 or -errno. */
    int (*write)(hwemu_chip_t *c, const uint8_t *buf, size_t len);
    /* One read message: fills len bytes. Returns 0 or -errno. */
    int (*read)(hwemu_chip_t *c, uint8_t *buf, size_t len);
    /* A general call (address 0x00) command byte; NULL: the chip ignores them. */
    void (*general_call)(hwemu_chip_t *c, uint8_t cmd);
} hwemu_chip_ops_t;

struct hwemu_chip {
    const hwemu_chip_ops_t *ops;
    hwemu_t *emu;
    unsigned addr;
    ems_rng_t rng; /* seeded noise of this chip's ADC */
};

/* Chip constructors: a zeroed chip of the module's own type, in its power-on
 * state. NULL when out of memory. */
hwemu_chip_t *hwemu_ina2xx_new(hwemu_t *e, unsigned addr, hwemu_monitor_t type);
hwemu_chip_t *hwemu_tmp102_new(hwemu_t *e, unsigned addr);
hwemu_chip_t *hwemu_ade7953_new(hwemu_t *e, unsigned addr);
hwemu_chip_t *hwemu_mcp4725_new(hwemu_t *e, unsigned addr);
/* The DAC's output in volts (0 when powered down). */
double hwemu_mcp4725_volts(const hwemu_chip_t *c);
/* The DAC register's code (12 bits). */
unsigned hwemu_mcp4725_code(const hwemu_chip_t *c);

/* A standard normal draw from the chip's generator. */
double hwemu_chip_noise(hwemu_chip_t *c);
/* Rounds x to the nearest integer in [lo, hi]. */
int64_t hwemu_clamp_round(double x, int64_t lo, int64_t hi);
/* A fresh ADC code that differs from `last_read` (the code the host last
 * saw): real drivers treat identical readings as a stuck chip, so the noise
 * never repeats the previous reading exactly. */
int64_t hwemu_adc_code(hwemu_chip_t *c, double ideal, double sigma, int64_t lo, int64_t hi,
                       int64_t last_read);

/* ------------------------------------------------------------------ gpio */

typedef struct {
    bool requested;
    bool output;
    bool active_low;
    uint32_t flags; /* GPIOHANDLE_REQUEST_* of the request */
    uint8_t value;  /* driven physical level (outputs) */
    char consumer[32];
    hwemu_gpio_req_t *req;
} hwemu_line_t;

/* ------------------------------------------------------------------ the emulator */

struct hwemu {
    hwemu_config_t cfg;
    hwemu_control_t ctl;
    const char *control_path, *state_path;
    int log_fd;

    /* time */
    int64_t t0_ns;
    int64_t last_control_check_ns;
    int64_t last_state_ns;
    struct {
        int64_t mtime_ns, size, ino;
        bool seen;
    } control_sig;

    /* the plant and what the chips see of it */
    ems_plant_t plant;
    hwemu_phys_t phys;
    ems_rng_t rng; /* zero-crossing jitter and glitches */

    /* the bus */
    hwemu_chip_t *chips[HWEMU_MAX_CHIPS];
    unsigned nchips;
    hwemu_chip_t *dac;
    bool nack_once[128];

    /* the GPIO chip */
    hwemu_line_t lines[HWEMU_MAX_LINES];
    hwemu_gpio_req_t *reqs; /* every open line request */

    /* the inverter: outputs and what they command */
    double command_w;
    bool charge_en, discharge_en, both_now;
    unsigned long both_enables;
    unsigned long i2c_transfers, i2c_nacks, events_sent;
    bool state_dirty;
};

/* The emulator, or NULL when the library is inert (no EMS_HWEMU_CONFIG or a
 * bad one). Initialises on the first call; thread-safe. */
hwemu_t *hwemu_get(void);
void hwemu_lock(void);
void hwemu_unlock(void);

/* CLOCK_MONOTONIC in ns. */
int64_t hwemu_mono_ns(void);

/* Brings the emulator up to now: re-reads the control file when it changed
 * (checked at most every 50 ms), advances the plant, refreshes e->phys, and
 * writes the state file when it is due. Call at the start of every access. */
void hwemu_tick(hwemu_t *e);

/* Re-evaluates the inverter after an output (DAC, enable line) changed:
 * command_w, the plant's setpoint, the both-enables count, the state file. */
void hwemu_outputs_changed(hwemu_t *e);

/* Writes the state file now (tmp + rename), when EMS_HWEMU_STATE is set. */
void hwemu_state_write(hwemu_t *e);

/* One line to EMS_HWEMU_LOG (no-op without it). */
void hwemu_log(hwemu_t *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Real libc calls, bypassing the interposer (hwemu.c). */
int hwemu_real_open(const char *path, int flags, int mode);
int hwemu_real_close(int fd);
long hwemu_real_write(int fd, const void *buf, size_t len);
int hwemu_real_stat(const char *path, int64_t *mtime_ns, int64_t *size, int64_t *ino);

/* Warns on stderr when ld.so and libc.so.6 are from different glibc builds
 * (qemu-user -L pairing a cross toolchain's ld.so with the multiarch libc):
 * such a program hangs or crashes in its first pthread_create. */
void hwemu_check_glibc(void);

/* ------------------------------------------------------------------ i2c bus */

/* I2C_FUNCS of the adapter. */
unsigned long hwemu_i2c_funcs(void);
/* I2C_RDWR: `msgs` are struct i2c_msg[n]. Returns n or -errno. */
int hwemu_i2c_rdwr(hwemu_t *e, void *msgs, unsigned n);
/* I2C_SMBUS emulated over I2C messages like the kernel's i2c core does.
 * `args` is struct i2c_smbus_ioctl_data. */
int hwemu_i2c_smbus(hwemu_t *e, unsigned addr, bool pec, void *args);
/* read()/write() on the i2c fd: one message to `addr`. */
long hwemu_i2c_rw(hwemu_t *e, unsigned addr, void *buf, size_t len, bool is_read);
/* Power-cycles the chip at `addr` (control key reset=). */
void hwemu_i2c_reset(hwemu_t *e, unsigned addr);

/* ------------------------------------------------------------------ gpio chip */

int hwemu_gpio_chipinfo(hwemu_t *e, void *arg);
int hwemu_gpio_lineinfo(hwemu_t *e, void *arg);
/* GPIO_GET_LINEHANDLE_IOCTL / GPIO_GET_LINEEVENT_IOCTL: on success the new
 * request's fd is in the struct and *out is the request. */
int hwemu_gpio_linehandle(hwemu_t *e, void *arg, hwemu_gpio_req_t **out);
int hwemu_gpio_lineevent(hwemu_t *e, void *arg, hwemu_gpio_req_t **out);
/* An ioctl on a handle or event fd. */
int hwemu_gpio_req_ioctl(hwemu_t *e, hwemu_gpio_req_t *r, unsigned long request, void *arg);
/* read() on an event fd: whole struct gpioevent_data records. `nonblock`
 * says whether the fd has O_NONBLOCK. May drop the lock while it waits. */
long hwemu_gpio_event_read(hwemu_t *e, hwemu_gpio_req_t *r, void *buf, size_t len, bool nonblock);
/* The last close of a request's fd: releases its lines (the caller closes
 * the fd itself). The request stays allocated for calls still using it
 * (they fail with EBADF) until hwemu_gpio_req_free. */
void hwemu_gpio_req_release(hwemu_t *e, hwemu_gpio_req_t *r);
void hwemu_gpio_req_free(hwemu_gpio_req_t *r);
/* The physical level of a line now. */
int hwemu_gpio_level(hwemu_t *e, unsigned offset);
/* Re-arms every event timer (after the control file changed). */
void hwemu_gpio_rearm_all(hwemu_t *e);
/* Releases every request (process exit: the kernel would). */
void hwemu_gpio_release_all(hwemu_t *e);

#endif
