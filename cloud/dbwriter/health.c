/* health.c: `ems-dbwriter --health` (see health.h). */
#include "health.h"

#include "error.h"
#include "link.h"
#include "timefmt.h"

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Connects to the Unix socket; returns the fd or a negative errno. */
static int health_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return -ENAMETOOLONG;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

static int health_send_hello(int fd)
{
    static const char info[] = "{\"name\":\"ems-dbwriter --health\",\"accepts\":[\"status\"]}";
    ems_buf_t b = EMS_BUF_INIT(EMS_BUF_UNBOUNDED);
    int rc = ems_link_put_hello(&b, info, sizeof info - 1);
    size_t off = 0;
    while (rc == 0 && off < ems_buf_len(&b)) {
        ssize_t n = send(fd, ems_buf_data(&b) + off, ems_buf_len(&b) - off, MSG_NOSIGNAL);
        if (n < 0 && errno != EINTR)
            rc = -errno;
        else if (n > 0)
            off += (size_t)n;
    }
    ems_buf_free(&b);
    return rc;
}

/* Reads frames until STATUS; copies its JSON into `json`. Returns 0,
 * EMS_ETIMEDOUT, EMS_ECLOSED, EMS_EPROTO (an ERROR frame or garbage; the
 * reason goes to `json`). */
static int health_read_status(int fd, int64_t deadline, char *json, size_t cap)
{
    ems_link_decoder_t d;
    ems_link_decoder_init(&d, 64 * 1024);
    int rc = EMS_ETIMEDOUT;
    for (;;) {
        ems_link_frame_t f;
        int got = ems_link_decoder_next(&d, &f);
        if (got < 0) {
            snprintf(json, cap, "malformed frame from the writer");
            rc = EMS_EPROTO;
            break;
        }
        if (got == 1) {
            if (f.kind == EMS_LINK_STATUS || f.kind == EMS_LINK_ERROR) {
                size_t n = f.len < cap - 1 ? f.len : cap - 1;
                memcpy(json, f.payload, n);
                json[n] = '\0';
                rc = f.kind == EMS_LINK_STATUS ? 0 : EMS_EPROTO;
                break;
            }
            continue; /* HELLO and anything else */
        }
        int64_t left = deadline - ems_time_mono_ms();
        if (left <= 0)
            break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            break;
        uint8_t buf[4096];
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = EMS_ECLOSED;
            break;
        }
        if (ems_link_decoder_feed(&d, buf, (size_t)n) < 0) {
            snprintf(json, cap, "too much data from the writer");
            rc = EMS_EPROTO;
            break;
        }
    }
    ems_link_decoder_free(&d);
    return rc;
}

/* Prints the verdict on a STATUS JSON; returns 0 or 1. */
static int health_judge(const char *json, FILE *out)
{
    json_t *o = json_loads(json, 0, NULL);
    const char *db = json_string_value(json_object_get(o, "db"));
    const char *mig = json_string_value(json_object_get(o, "migrations"));
    const char *err = json_string_value(json_object_get(o, "error"));
    const char *commits = json_string_value(json_object_get(o, "commits"));
    json_t *lc = json_object_get(o, "last_commit_ms");
    int rc = 1;
    if (!db || !mig) {
        fprintf(out, "unhealthy: the writer's status is not understood: %.200s\n", json);
    } else if (strcmp(db, "ok") != 0) {
        fprintf(out, "unhealthy: database %s%s%s\n",
                !strcmp(db, "connecting")                ? "not reached yet"
                : commits && !strcmp(commits, "failing") ? "refuses commits"
                                                         : "unreachable",
                err ? ": " : "", err ? err : "");
    } else if (strcmp(mig, "done") != 0) {
        fprintf(out, "unhealthy: migrations pending\n");
    } else {
        char when[EMS_TIME_STR_MAX] = "none since start";
        if (json_is_integer(lc))
            ems_time_format((int64_t)json_integer_value(lc), when, sizeof when);
        fprintf(out, "ok: database ok, migrations done, storage %s, last commit %s\n",
                json_string_value(json_object_get(o, "storage")), when);
        rc = 0;
    }
    json_decref(o);
    return rc;
}

int ems_health_check(const char *socket_path, unsigned timeout_ms, FILE *out)
{
    int64_t deadline = ems_time_mono_ms() + timeout_ms;
    int fd = health_connect(socket_path);
    if (fd < 0) {
        fprintf(out, "unhealthy: the writer does not listen on %s: %s\n", socket_path,
                strerror(-fd));
        return 2;
    }
    char json[2048] = "";
    int rc = health_send_hello(fd);
    if (rc == 0)
        rc = health_read_status(fd, deadline, json, sizeof json);
    close(fd);
    if (rc == EMS_ETIMEDOUT) {
        fprintf(out, "unhealthy: the writer on %s did not answer within %u ms\n", socket_path,
                timeout_ms);
        return 2;
    }
    if (rc < 0) {
        fprintf(out, "unhealthy: no status from the writer on %s (%s%s%s)\n", socket_path,
                ems_strerror(rc), json[0] ? ": " : "", json);
        return 2;
    }
    return health_judge(json, out);
}
