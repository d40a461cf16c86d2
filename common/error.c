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
    default:
        break;
    }
    if (code < 0 && code > -4096)
        return strerror(-code); /* glibc returns a static table entry */
    return "unknown error";
}
