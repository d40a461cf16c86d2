/* status.c: wire names of states, modes, target modes and faults. */
#include "status.h"

#include "error.h"

#include <string.h>

static const char *const state_names[EMS_STATE_COUNT] = {
    "IDLE", "CHARGING", "DISCHARGING", "FULL", "EMPTY", "ERROR",
};
static const char *const mode_names[EMS_MODE_COUNT] = {"AUTO", "MANUAL"};
static const char *const target_names[EMS_TARGET_COUNT] = {
    "AUTO", "MANUAL_CHARGE", "MANUAL_DISCHARGE", "MANUAL_IDLE",
};
/* Indexed by bit number, in the order the bits are listed on the wire. */
static const char *const fault_names[EMS_FAULT_COUNT] = {
    "OVERHEAT", "UNDERTEMP", "OVERVOLTAGE", "UNDERVOLTAGE",
    "OVERCURRENT", "SENSOR_FAULT", "GRID_FAULT",
};

static int lookup(const char *const *names, int n, const char *s)
{
    if (!s)
        return -1;
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}

const char *ems_state_name(ems_state_t s)
{
    return (unsigned)s < EMS_STATE_COUNT ? state_names[s] : NULL;
}

int ems_state_parse(const char *s, ems_state_t *out)
{
    int i = lookup(state_names, EMS_STATE_COUNT, s);
    if (i < 0)
        return EMS_EINVAL;
    *out = (ems_state_t)i;
    return 0;
}

const char *ems_mode_name(ems_mode_t m)
{
    return (unsigned)m < EMS_MODE_COUNT ? mode_names[m] : NULL;
}

int ems_mode_parse(const char *s, ems_mode_t *out)
{
    int i = lookup(mode_names, EMS_MODE_COUNT, s);
    if (i < 0)
        return EMS_EINVAL;
    *out = (ems_mode_t)i;
    return 0;
}

const char *ems_target_mode_name(ems_target_mode_t t)
{
    return (unsigned)t < EMS_TARGET_COUNT ? target_names[t] : NULL;
}

int ems_target_mode_parse(const char *s, ems_target_mode_t *out)
{
    int i = lookup(target_names, EMS_TARGET_COUNT, s);
    if (i < 0)
        return EMS_EINVAL;
    *out = (ems_target_mode_t)i;
    return 0;
}

ems_mode_t ems_target_mode_to_mode(ems_target_mode_t t)
{
    return t == EMS_TARGET_AUTO ? EMS_MODE_AUTO : EMS_MODE_MANUAL;
}

const char *ems_fault_name(uint32_t bit)
{
    /* Exactly one known bit: non-zero, a power of two, inside the mask. */
    if (bit == 0 || (bit & (bit - 1)) != 0 || (bit & ~EMS_FAULT_ALL) != 0)
        return NULL;
    return fault_names[__builtin_ctz(bit)];
}

int ems_fault_parse(const char *s, uint32_t *bit_out)
{
    int i = lookup(fault_names, EMS_FAULT_COUNT, s);
    if (i < 0)
        return EMS_EINVAL;
    *bit_out = 1u << i;
    return 0;
}
