/* timefmt.h: RFC 3339 UTC timestamps and the two clocks.
 *
 * The wire form is "YYYY-MM-DDTHH:MM:SS[.f]Z" with an optional fraction of
 * 1 to 9 digits and the literal "Z" (UTC); docs/protocol.md. Parsing is
 * strict: a lower-case "t"/"z", an offset such as "+01:00", a space instead
 * of "T", or a calendar-invalid date (Feb 30, Feb 29 of a common year) is
 * refused. Leap seconds (second 60) are refused too: POSIX time has none and
 * no clock of ours produces them. The fraction is truncated (not rounded) to
 * milliseconds, so parsing never moves a timestamp into the next second.
 * Years 0000..9999 are accepted (the proleptic Gregorian calendar).
 */
#ifndef EMS_TIMEFMT_H
#define EMS_TIMEFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" is 24 characters; with the NUL, 25. */
#define EMS_TIME_STR_MAX 25
/* 0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z in Unix ms. */
#define EMS_TIME_MIN_MS (-62167219200000LL)
#define EMS_TIME_MAX_MS (253402300799999LL)

/* Parses `len` bytes of `s` (need not be NUL-terminated) into milliseconds
 * since the Unix epoch. Returns 0, or EMS_EINVAL and leaves *ms_out alone. */
int ems_time_parse(const char *s, size_t len, int64_t *ms_out);

/* True when `ms` lies in EMS_TIME_MIN_MS..EMS_TIME_MAX_MS (formattable). */
bool ems_time_ms_valid(int64_t ms);

/* Writes "YYYY-MM-DDTHH:MM:SS.mmmZ" into buf (NUL-terminated). Returns 24,
 * EMS_EINVAL if `ms` is out of range, EMS_ENOSPC if cap < EMS_TIME_STR_MAX.
 * Never allocates. */
int ems_time_format(int64_t ms, char *buf, size_t cap);

/* CLOCK_REALTIME in ms since the Unix epoch (steps when the clock is set). */
int64_t ems_time_now_ms(void);

/* CLOCK_MONOTONIC in ms (never steps; for timeouts and intervals). */
int64_t ems_time_mono_ms(void);

#endif
