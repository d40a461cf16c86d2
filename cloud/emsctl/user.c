/* user.c: `emsctl user add|passwd|list` (dashboard users).
 *
 * Users live in PostgreSQL (table users); emsctl writes them directly (see
 * device.c). Passwords are stored as PBKDF2-HMAC-SHA256 with a per-user
 * salt (cloud/lib/auth.h), the form the gateway checks at login.
 * The password is read from standard input (one line), or asked for twice
 * without echo when standard input is a terminal; --generate makes a random
 * one and prints it once.
 */
#include "emsctl.h"

#include "auth.h"
#include "error.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

PGconn *emsctl_prov_connect(const char *dsn);
PGresult *emsctl_prov_exec(PGconn *c, const char *sql, int n, const char *const *params);

static void user_usage(FILE *out)
{
    fprintf(out,
            "usage: emsctl user [--dsn DSN] add NAME --role viewer|operator|admin [--generate]\n"
            "                   [--iterations N]\n"
            "       emsctl user [--dsn DSN] passwd NAME [--generate] [--iterations N]\n"
            "       emsctl user [--dsn DSN] list\n"
            "The password is read from standard input (asked twice on a terminal);\n"
            "--generate makes a random one and prints it once. A changed role or password\n"
            "applies at the next login; sessions already issued last until they expire (12 h).\n"
            "--iterations sets the PBKDF2 count (1000..10000000, default %d); the gateway\n"
            "raises a lower count to the default at the user's next login.\n",
            EMS_AUTH_PBKDF2_ITER);
}

static int read_line(const char *prompt, char *buf, size_t cap)
{
    bool tty = isatty(STDIN_FILENO);
    struct termios old, quiet;
    if (tty) {
        fprintf(stderr, "%s", prompt);
        tcgetattr(STDIN_FILENO, &old);
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    }
    char *ok = fgets(buf, (int)cap, stdin);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSANOW, &old);
        fprintf(stderr, "\n");
    }
    if (!ok)
        return -1;
    buf[strcspn(buf, "\r\n")] = '\0';
    return 0;
}

/* Gets the new password into pw (generated, or read). 0 or -1. */
static int get_password(bool generate, char *pw, size_t cap)
{
    if (generate) {
        unsigned char raw[12];
        if (ems_auth_random(raw, sizeof raw) != 0)
            return -1;
        ems_auth_hex(raw, sizeof raw, pw); /* 24 hex characters: 96 bits */
        printf("%s\n", pw);
        fflush(stdout);
        fprintf(stderr, "emsctl: the generated password above is shown only now\n");
        return 0;
    }
    if (read_line("password: ", pw, cap) < 0 || !pw[0]) {
        fprintf(stderr, "emsctl: no password given (on standard input, or use --generate)\n");
        return -1;
    }
    if (isatty(STDIN_FILENO)) {
        char again[256];
        if (read_line("again: ", again, sizeof again) < 0 || strcmp(again, pw) != 0) {
            fprintf(stderr, "emsctl: the passwords differ\n");
            return -1;
        }
    }
    if (strlen(pw) < 8)
        fprintf(stderr, "emsctl: warning: a password of fewer than 8 characters is weak\n");
    return 0;
}

static int user_set(PGconn *c, const char *name, const char *role, bool generate, bool add,
                    unsigned iterations)
{
    char pw[256], hash[EMS_AUTH_HASH_MAX];
    if (get_password(generate, pw, sizeof pw) < 0)
        return EMSCTL_FAIL;
    int rc = ems_auth_password_hash(pw, iterations, hash, sizeof hash);
    memset(pw, 0, sizeof pw);
    if (rc != 0) {
        fprintf(stderr, "emsctl: cannot hash the password: %s\n", ems_strerror(rc));
        return EMSCTL_FAIL;
    }
    PGresult *r;
    if (add) {
        const char *p[3] = {name, role, hash};
        r = emsctl_prov_exec(c,
                             "INSERT INTO users (name, role, password_hash) VALUES ($1, $2, $3) "
                             "ON CONFLICT (name) DO NOTHING",
                             3, p);
    } else {
        const char *p[2] = {name, hash};
        r = emsctl_prov_exec(
            c, "UPDATE users SET password_hash = $2, updated_at = now() WHERE name = $1", 2, p);
    }
    if (!r)
        return EMSCTL_FAIL;
    bool done = strcmp(PQcmdTuples(r), "1") == 0;
    PQclear(r);
    if (!done) {
        fprintf(stderr, add ? "emsctl: user '%s' exists already (use 'passwd')\n"
                            : "emsctl: no user '%s'\n",
                name);
        return EMSCTL_FAIL;
    }
    fprintf(stderr, "emsctl: user '%s' %s\n", name, add ? "created" : "has a new password");
    return EMSCTL_OK;
}

static int user_list(PGconn *c)
{
    PGresult *r = emsctl_prov_exec(
        c,
        "SELECT name, role, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
        "FROM users ORDER BY name",
        0, NULL);
    if (!r)
        return EMSCTL_FAIL;
    printf("%-32s %-9s %s\n", "USER", "ROLE", "CREATED");
    for (int i = 0; i < PQntuples(r); i++)
        printf("%-32s %-9s %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2));
    PQclear(r);
    return EMSCTL_OK;
}

int emsctl_user_main(int argc, char **argv)
{
    const char *dsn = NULL, *verb = NULL, *name = NULL, *role = NULL;
    bool generate = false;
    unsigned iterations = 0; /* the default */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            user_usage(stdout);
            return EMSCTL_OK;
        } else if (!strcmp(a, "--dsn") && i + 1 < argc) {
            dsn = argv[++i];
        } else if (!strncmp(a, "--dsn=", 6)) {
            dsn = a + 6;
        } else if (!strcmp(a, "--role") && i + 1 < argc) {
            role = argv[++i];
        } else if (!strncmp(a, "--role=", 7)) {
            role = a + 7;
        } else if (!strcmp(a, "--generate")) {
            generate = true;
        } else if ((!strcmp(a, "--iterations") && i + 1 < argc) ||
                   !strncmp(a, "--iterations=", 13)) {
            const char *v = a[12] == '=' ? a + 13 : argv[++i];
            char *end;
            unsigned long n = strtoul(v, &end, 10);
            if (*end || end == v || n < 1000 || n > 10000000) {
                fprintf(stderr, "emsctl: --iterations: expected 1000..10000000\n");
                return EMSCTL_USAGE;
            }
            iterations = (unsigned)n;
        } else if (a[0] == '-') {
            user_usage(stderr);
            return EMSCTL_USAGE;
        } else if (!verb) {
            verb = a;
        } else if (!name) {
            name = a;
        } else {
            user_usage(stderr);
            return EMSCTL_USAGE;
        }
    }
    bool is_add = verb && !strcmp(verb, "add"), is_pw = verb && !strcmp(verb, "passwd"),
         is_list = verb && !strcmp(verb, "list");
    ems_auth_role_t rl;
    if (!(is_add || is_pw || is_list) || (is_list && (name || role || generate)) ||
        (!is_list && !name) || (is_add && (!role || ems_auth_role_parse(role, &rl) != 0)) ||
        (is_pw && role)) {
        user_usage(stderr);
        return EMSCTL_USAGE;
    }
    if (name && !ems_auth_user_name_valid(name, strlen(name))) {
        fprintf(stderr, "emsctl: '%s' is not a user name (1..64 of [A-Za-z0-9_.@-])\n", name);
        return EMSCTL_USAGE;
    }
    PGconn *c = emsctl_prov_connect(dsn);
    if (!c)
        return EMSCTL_FAIL;
    int rc = is_list ? user_list(c) : user_set(c, name, role, generate, is_add, iterations);
    PQfinish(c);
    return rc;
}
