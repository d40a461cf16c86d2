/* gw_cmd.h: the command tracker: every command's life, without sockets.
 *
 * A command goes through (docs/api.md, "Commands"):
 *
 *     queued --> sent --> accepted --> completed
 *       |          |          |
 *       |          |          +--> failed | timed_out (not completed in time)
 *       |          +--> rejected | completed | failed | timed_out (no answer)
 *       +--> expired (its TTL passed before the device came back)
 *
 * and a command for an offline device without a TTL is created as `failed`
 * at once. rejected, completed, failed, timed_out and expired are final.
 *
 * The tracker is pure: time is passed in (monotonic is not needed; it uses
 * the caller's wall-clock ms so the record's times are real), and I/O goes
 * through two callbacks the owner provides:
 *   deliver(cmd)  send the wire command to its device now; 0 if it went out
 *                 (queued to the device's socket), negative if not;
 *   changed(cmd)  the record changed status (also called once on creation):
 *                 the owner stores it through the DB writer (audit trail) and
 *                 pushes it to dashboards.
 * Both are called from inside gw_cmds_* calls; they must not free the
 * tracker, but may call gw_cmds_find.
 *
 * Delivery is at-least-once and safe: the edge answers a repeated
 * command_id with the result it had and never executes it twice
 * (docs/protocol.md 2.3), so a command still `sent` when its device
 * reconnects is delivered again.
 *
 * Memory: active commands and the newest `retain` finished ones are kept;
 * older finished records are dropped (the DB writer has them all).
 * command_id idempotency (same id + same body -> the existing record) holds
 * for the records kept here.
 */
#ifndef GW_CMD_H
#define GW_CMD_H

#include "command.h"
#include "command_result.h"
#include "gw_map.h"
#include "telemetry.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    GW_CMD_QUEUED = 0,
    GW_CMD_SENT,
    GW_CMD_ACCEPTED,
    GW_CMD_REJECTED,
    GW_CMD_COMPLETED,
    GW_CMD_FAILED,
    GW_CMD_TIMED_OUT,
    GW_CMD_EXPIRED,
    GW_CMD_STATUS_COUNT
} gw_cmd_status_t;

const char *gw_cmd_status_name(gw_cmd_status_t s);
bool gw_cmd_status_final(gw_cmd_status_t s);

#define GW_CMD_HIST_MAX 8
#define GW_CMD_MSG_MAX (4 * EMS_RESULT_MESSAGE_MAX + 1)

typedef struct gw_cmd {
    ems_command_t cmd; /* the wire command; cmd.command_id is the key */
    char device_id[EMS_DEVICE_ID_MAX + 1];
    char created_by[65];
    gw_cmd_status_t status;
    char reason[24];              /* edge's reason, or ours ("GATEWAY_..."); "" none */
    char message[GW_CMD_MSG_MAX]; /* "" none */
    int64_t created_ms, updated_ms;
    int64_t expires_ms;  /* TTL end for queued commands; 0 = no TTL */
    int64_t deadline_ms; /* sent/accepted: when it times out; 0 = none */
    struct {
        gw_cmd_status_t status;
        int64_t at_ms;
    } hist[GW_CMD_HIST_MAX];
    unsigned nhist;
    /* Tracker links (private). */
    struct gw_cmd *prev, *next; /* active list or finished list */
} gw_cmd_t;

typedef struct {
    int (*deliver)(void *ud, const gw_cmd_t *c);
    void (*changed)(void *ud, const gw_cmd_t *c);
} gw_cmds_ops_t;

typedef struct {
    int64_t answer_ms;   /* sent -> no answer: timed_out */
    int64_t complete_ms; /* accepted -> not completed: timed_out */
    size_t retain;       /* finished records kept in memory */
} gw_cmds_cfg_t;

typedef struct gw_cmds gw_cmds_t;

/* Returns NULL on allocation failure. `ops` and `ud` are borrowed. */
gw_cmds_t *gw_cmds_new(const gw_cmds_cfg_t *cfg, const gw_cmds_ops_t *ops, void *ud);
void gw_cmds_free(gw_cmds_t *t);

typedef struct {
    const char *device_id;
    const char *created_by;
    ems_command_t cmd; /* validated; command_id "" means "make one" */
    int64_t ttl_s;     /* 0: fail at once if offline; else queue this long */
    bool online;       /* is the device connected now */
    const char *offline_msg; /* NULL, or the message if it cannot go out now and has no TTL */
} gw_cmd_req_t;

/* Creates (or finds) a command. Returns
 *   0           a new record in *out (status sent, queued, or failed when
 *               the device is offline and no TTL was given)
 *   1           the same command_id with the same device and body exists:
 *               *out is that record, nothing changed (idempotent retry)
 *   EMS_EEXIST  the command_id exists with another body: *out is it
 *   EMS_ENOMEM
 * A command that cannot be delivered although the device is online (its
 * send queue is full) ends `failed` too. */
int gw_cmds_submit(gw_cmds_t *t, const gw_cmd_req_t *req, int64_t now_ms, gw_cmd_t **out);

/* The device connected: its queued commands are delivered in creation
 * order, and commands still `sent` are delivered again. */
void gw_cmds_online(gw_cmds_t *t, const char *device_id, int64_t now_ms);

/* Sends the device's `accepted` commands again (through `deliver`; records
 * are not changed). The edge answers a command_id it has seen with its
 * latest result and never executes it twice, so this asks again for an
 * answer that may have been lost on the way: relayed by another gateway
 * while the message bus was down, or sent while the device moved between
 * gateways. */
void gw_cmds_reask(gw_cmds_t *t, const char *device_id);

/* Takes over a command another gateway created and this one delivered,
 * when that gateway is gone (gw_bus.c): the record starts at `status`
 * (sent or accepted, what the origin last heard) with a fresh answer or
 * completion deadline, so the device's next answers and a time-out are
 * recorded here, in the audit trail and for dashboards. The status it
 * starts at is not reported again (the origin did). Returns 0, EMS_EEXIST
 * (known here already), EMS_EINVAL (not sent/accepted) or EMS_ENOMEM. */
int gw_cmds_adopt(gw_cmds_t *t, const ems_command_t *cmd, const char *device_id,
                  gw_cmd_status_t status, int64_t now_ms);

/* An answer from the edge, already validated. Returns 0 (applied),
 * EMS_ENOENT (unknown command), EMS_EPERM (the command belongs to another
 * device: a device speaks only for itself), or EMS_EINVAL (not a valid
 * transition from the current status, e.g. a late answer after timed_out;
 * the record is left as it was). A repeat of the current status is 0. */
int gw_cmds_result(gw_cmds_t *t, const char *device_id, const ems_command_result_t *r,
                   int64_t now_ms);

/* Ends an active (queued, sent or accepted) command as `failed` with our
 * `reason` and `message` (e.g. the gateway that has the device did not
 * acknowledge it). Returns 0, EMS_ENOENT (unknown) or EMS_EINVAL (already
 * final: nothing changed). */
int gw_cmds_fail(gw_cmds_t *t, const char *command_id, const char *reason, const char *message,
                 int64_t now_ms);

/* Applies deadlines: queued past its TTL -> expired; sent or accepted past
 * its deadline -> timed_out. */
void gw_cmds_tick(gw_cmds_t *t, int64_t now_ms);

/* The earliest deadline of any active command, or INT64_MAX. */
int64_t gw_cmds_next_deadline(const gw_cmds_t *t);

gw_cmd_t *gw_cmds_find(gw_cmds_t *t, const char *command_id);

/* Records currently in each status (for metrics; finished ones count while
 * they are retained). */
size_t gw_cmds_count(const gw_cmds_t *t, gw_cmd_status_t s);

/* The record as JSON (docs/api.md) into buf. Returns the length or
 * EMS_ENOSPC. GW_CMD_JSON_MAX always suffices. */
#define GW_CMD_JSON_MAX 4096
int gw_cmd_to_json(const gw_cmd_t *c, char *buf, size_t cap);

/* The audit event of the record's latest change (docs/storage.md, events):
 * {"type":"command",...} when it was created, else
 * {"type":"command_status",...}, with the actor: the device for what it
 * answered, the user for the creation, else "gateway". Returns the length
 * or EMS_ENOSPC; GW_CMD_JSON_MAX always suffices. */
int gw_cmd_event_json(const gw_cmd_t *c, char *buf, size_t cap);

/* Writes a fresh command id "c_<ms hex><random hex>" into out (cap >= 32). */
int gw_cmd_new_id(int64_t now_ms, char *out, size_t cap);

#endif
