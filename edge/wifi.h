/* wifi.h: the Wi-Fi signal level for system_status.wifi_strength.
 *
 * Linux lists wireless interfaces in /proc/net/wireless:
 *   Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE
 *    face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22
 *    wlan0: 0000   70.  -40.  -256        0      0      0      0      0        0
 * The "level" column of the first interface is the signal in dBm. Some old
 * drivers print it as an unsigned byte (216 for -40); values above 0 are
 * converted that way. A device with no wireless interface, or one that is
 * not associated (level outside -127..-1 dBm after conversion; drivers print
 * 0 or -256 then), has no value: the packet carries null
 * (docs/protocol.md, docs/state-machine.md "Wi-Fi").
 */
#ifndef EMS_WIFI_H
#define EMS_WIFI_H

#include <stdbool.h>
#include <stddef.h>

/* Parses the text of /proc/net/wireless (`len` bytes, need not be
 * NUL-terminated). Returns true with *dbm_out in -127..-1 when the first
 * interface has a level, false otherwise. */
bool ems_wifi_parse(const char *text, size_t len, int *dbm_out);

/* Reads `path` (normally "/proc/net/wireless") and parses it. A missing or
 * unreadable file means no wireless interface: false. Never blocks for long
 * (procfs); reads at most 4 KiB. */
bool ems_wifi_read(const char *path, int *dbm_out);

#endif
