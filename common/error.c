#include "error.h"

#include <string.h>

const char *ems_strerror(int code)
{
    switch (code) {
    case EMS_OK:
        return "success";
    case EMS_ETLS:
        return "TLS failure";
    case EMS_EDB:
        return "database failure";
    case EMS_ECONFIG:
        return "bad configuration";
    /* The hardware codes read better than their errno texts here. */
    case EMS_ENXIO:
        return "no answer (the device did not acknowledge)";
    case EMS_ENODEV:
        return "not the expected device";
    case EMS_ERANGE:
        return "reading out of range";
    case EMS_ESTALE:
        return "reading stuck";
    default:
        break;
    }
    if (code < 0 && code > -4096)
        return strerror(-code); /* glibc returns a static table entry */
    return "unknown error";
}
