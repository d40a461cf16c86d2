/* main.c: emsctl, the operator's command-line tool.
 *
 *   emsctl [--help] COMMAND [ARGS...]
 *
 * Adding a sub-command: write cloud/emsctl/NAME.c with
 *   int emsctl_NAME_main(int argc, char **argv);   (argv[0] is "NAME")
 * declare it in cloud/emsctl/emsctl.h, and add one line to `commands` below.
 * That is the only edit other files need; the Makefile picks up NAME.c by
 * itself. A sub-command prints its own usage for "--help" and returns
 * EMSCTL_OK / EMSCTL_FAIL / EMSCTL_USAGE.
 */
#include "emsctl.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary; /* NULL: hidden from --help (test helpers) */
} emsctl_cmd_t;

static const emsctl_cmd_t commands[] = {
    {"validate", emsctl_validate_main, "check wire messages against the protocol rules"},
    {"device", emsctl_device_main, "provision devices: add, rotate, revoke, list"},
    {"user", emsctl_user_main, "dashboard users: add, passwd, list"},
    {"_random", emsctl_random_main, NULL},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: emsctl [--help] COMMAND [ARGS...]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (commands[i].summary)
            fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'emsctl COMMAND --help' describes one command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EMSCTL_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return EMSCTL_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "emsctl: unknown command '%s' (try 'emsctl --help')\n", argv[1]);
    return EMSCTL_USAGE;
}
