/* emsctl.h: the sub-commands of emsctl, the operator's command-line tool.
 *
 * Each sub-command lives in its own file (validate.c, and later device.c,
 * user.c, db.c ...) and exposes one entry point with main()'s signature:
 * argv[0] is the sub-command's name, the options follow. It returns the
 * process exit status: 0 success, 1 failure, 2 bad usage (a message on
 * stderr). main.c lists the entry points in its table (see there).
 */
#ifndef EMSCTL_H
#define EMSCTL_H

/* Exit statuses shared by all sub-commands. */
#define EMSCTL_OK 0
#define EMSCTL_FAIL 1
#define EMSCTL_USAGE 2

/* emsctl validate [--kind KIND] FILE...   (validate.c) */
int emsctl_validate_main(int argc, char **argv);

/* emsctl _random KIND SEED COUNT: random valid messages, one per line, for
 * the schema suite (randmsg.c); hidden from --help. */
int emsctl_random_main(int argc, char **argv);

/* emsctl device add|rotate|revoke|list ID (device.c) */
int emsctl_device_main(int argc, char **argv);

/* emsctl user add|passwd|list (user.c) */
int emsctl_user_main(int argc, char **argv);

#endif
