/* version.h: the release of ems, shared by every program (ems-edge,
 * ems-gateway and ems-dbwriter print it with --version and the edge in its
 * firmware string). The edge's Debian package takes its version from
 * edge/packaging/debian/changelog, which must agree. */
#ifndef EMS_VERSION_H
#define EMS_VERSION_H

#define EMS_VERSION "0.1.0"

#endif
