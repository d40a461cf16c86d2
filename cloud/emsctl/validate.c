/* validate.c: `emsctl validate`, checking wire messages from files.
 *
 *   emsctl validate [--kind KIND] FILE...
 *
 * Each FILE (or "-" for stdin) holds one JSON message. Without --kind the
 * message is classified first (message.h). One line per file on stdout:
 *   FILE: ok
 *   FILE: battery.soc: 101 is above the maximum 100
 *   FILE: invalid JSON at line 1, column 5: ...     (whole-message errors)
 * Exit status: 0 if every file is valid, 1 otherwise, 2 for bad usage.
 * The same decoders as the daemons run here, so this is the reference the
 * schema suite (test/suites/10-schema-vectors.py) compares with.
 */
#include "emsctl.h"

#include "message.h"
#include "valid.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FILE_MAX (64u << 20) /* refuse to slurp anything larger */

static void validate_usage(FILE *out)
{
    fprintf(out, "usage: emsctl validate [--kind KIND] FILE...\n"
                 "  Checks each FILE (\"-\" = stdin) holding one JSON message and prints\n"
                 "  \"FILE: ok\" or \"FILE: PATH: REASON\". Without --kind each message is\n"
                 "  classified by its \"type\" (or device_id/action). KIND is one of:\n   ");
    for (int k = 1; k < EMS_MSG_COUNT; k++)
        fprintf(out, " %s", ems_message_kind_name((ems_msg_kind_t)k));
    fprintf(out, "\n  Exit status: 0 all valid, 1 some invalid or unreadable, 2 bad usage.\n");
}

/* Reads a whole file (or stdin) into a new buffer; NULL with errno set. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    int err = buf ? 0 : ENOMEM;
    while (!err) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break; /* end of file or a read error */
        char *bigger = cap < FILE_MAX ? realloc(buf, cap * 2) : NULL;
        if (!bigger)
            err = cap < FILE_MAX ? ENOMEM : EFBIG;
        else
            buf = bigger, cap *= 2;
    }
    if (!err && ferror(f))
        err = EIO;
    if (f != stdin)
        fclose(f);
    if (err) {
        free(buf);
        errno = err;
        return NULL;
    }
    *len = n;
    return buf;
}

/* Validates one file and prints its line; true when valid. */
static bool validate_file(const char *path, ems_msg_kind_t kind)
{
    size_t len = 0;
    char *text = slurp(path, &len);
    if (!text) {
        printf("%s: cannot read: %s\n", path, strerror(errno));
        return false;
    }
    ems_verr_t err;
    char line[sizeof err.path + sizeof err.reason + 4];
    int rc = ems_message_check_text(text, len, kind, NULL, &err);
    free(text);
    if (rc == 0)
        printf("%s: ok\n", path);
    else
        printf("%s: %s\n", path, ems_verr_format(&err, line, sizeof line));
    return rc == 0;
}

int emsctl_validate_main(int argc, char **argv)
{
    ems_msg_kind_t kind = EMS_MSG_UNKNOWN;
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        const char *opt = argv[i], *val = NULL;
        if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0) {
            validate_usage(stdout);
            return EMSCTL_OK;
        }
        if (strcmp(opt, "--") == 0) {
            i++;
            break;
        }
        if (strncmp(opt, "--kind=", 7) == 0)
            val = opt + 7;
        else if (strcmp(opt, "--kind") == 0 && i + 1 < argc)
            val = argv[++i];
        if (!val) {
            fprintf(stderr, "emsctl validate: unknown or incomplete option '%s'\n", opt);
            validate_usage(stderr);
            return EMSCTL_USAGE;
        }
        if (ems_message_kind_parse(val, &kind) < 0) {
            fprintf(stderr, "emsctl validate: unknown kind '%s'\n", val);
            validate_usage(stderr);
            return EMSCTL_USAGE;
        }
    }
    if (i >= argc) {
        fprintf(stderr, "emsctl validate: no FILE given\n");
        validate_usage(stderr);
        return EMSCTL_USAGE;
    }
    bool all_ok = true;
    for (; i < argc; i++)
        all_ok &= validate_file(argv[i], kind);
    fflush(stdout);
    return all_ok ? EMSCTL_OK : EMSCTL_FAIL;
}
