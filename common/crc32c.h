/* crc32c.h: CRC-32C (Castagnoli), the checksum of everything the edge keeps
 * on disk (the telemetry buffer's records and sequence file, the state
 * file), so a torn or damaged record is detected instead of trusted. */
#ifndef EMS_CRC32C_H
#define EMS_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continues a CRC-32C over len bytes of buf; start with crc = 0. The
 * result of one call can be passed as `crc` of the next to checksum
 * pieces as one. */
uint32_t ems_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
