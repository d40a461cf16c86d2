/* edge_status.c: the local endpoint's bodies from a snapshot of the
 * daemon (edge_status.h). */
#include "edge_status.h"

#include "daemon.h" /* EMS_EDGE_FIRMWARE */
#include "error.h"
#include "telemetry.h"
#include "timefmt.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *es__faults_json(uint32_t bits)
{
    json_t *a = json_array();
    for (unsigned i = 0; i < EMS_FAULT_COUNT; i++)
        if (bits & (1u << i))
            json_array_append_new(a, json_string(ems_fault_name(1u << i)));
    return a;
}

int ems_edge_status_json(const ems_edge_status_t *s, ems_buf_t *out)
{
    int64_t mono = s->mono_ms;
    json_t *j = json_object();
    json_object_set_new(j, "device_id", json_string(s->device_id));
    json_object_set_new(j, "firmware", json_string(EMS_EDGE_FIRMWARE));
    json_object_set_new(j, "backend", json_string(s->hwio ? "hw" : "sim"));
    json_object_set_new(j, "uptime_s", json_integer((mono - s->start_mono_ms) / 1000));
    json_object_set_new(j, "state", json_string(ems_state_name(s->state)));
    json_object_set_new(j, "mode",
                        json_string(ems_mode_name(ems_target_mode_to_mode(s->target_mode))));
    json_object_set_new(j, "target_mode", json_string(ems_target_mode_name(s->target_mode)));
    json_object_set_new(j, "target_power", json_real(s->target_power));
    json_object_set_new(j, "setpoint_w", json_real(s->have_last ? s->setpoint_w : 0));
    json_object_set_new(j, "error_flags", es__faults_json(s->have_last ? s->error_flags : 0));
    json_object_set_new(j, "active_faults", es__faults_json(s->active_faults));
    json_object_set_new(j, "clock_synced", json_boolean(s->clock_synced));
    json_t *clk = json_object();
    json_object_set_new(clk, "kernel_synced",
                        s->kernel_synced < 0 ? json_null() : json_boolean(s->kernel_synced == 1));
    json_object_set_new(clk, "gateway_offset_ms",
                        s->have_gateway_offset ? json_integer(s->gateway_offset_ms) : json_null());
    json_object_set_new(j, "clock", clk);

    json_t *link = json_object();
    if (s->have_link) {
        const ems_uplink_stats_t us = s->link;
        json_object_set_new(link, "state", json_string(ems_uplink_state_name(us.state)));
        json_object_set_new(link, "connected", json_boolean(us.state == EMS_UPLINK_READY));
        json_object_set_new(link, "url", json_string(s->cloud_url));
        json_object_set_new(link, "tls", json_boolean(us.tls));
        json_object_set_new(link, "up_for_s",
                            us.ready_since_ms ? json_integer((mono - us.ready_since_ms) / 1000)
                                              : json_null());
        json_object_set_new(link, "next_attempt_in_ms",
                            us.retry_at_ms
                                ? json_integer(us.retry_at_ms > mono ? us.retry_at_ms - mono : 0)
                                : json_null());
        json_object_set_new(link, "attempts", json_integer((json_int_t)us.attempts));
        json_object_set_new(link, "reconnects", json_integer((json_int_t)us.reconnects));
        json_object_set_new(link, "failures", json_integer((json_int_t)us.failures));
        json_object_set_new(link, "drops", json_integer((json_int_t)us.drops));
        json_object_set_new(link, "last_error", json_string(us.last_error));
    }
    json_object_set_new(j, "link", link);

    const ems_store_stats_t ss = s->buffer;
    json_t *b = json_object();
    json_object_set_new(b, "pending", json_integer((json_int_t)ss.pending));
    json_object_set_new(b, "next_seq", json_integer((json_int_t)ss.next_seq));
    json_object_set_new(b, "file_bytes", json_integer((json_int_t)ss.file_bytes));
    json_object_set_new(b, "acked_total", json_integer((json_int_t)ss.acked_total));
    json_object_set_new(b, "nacked_total", json_integer((json_int_t)ss.nacked_total));
    json_object_set_new(b, "evicted_total", json_integer((json_int_t)ss.evicted_total));
    json_object_set_new(b, "expired_total", json_integer((json_int_t)ss.expired_total));
    json_object_set_new(b, "corrupt_total", json_integer((json_int_t)ss.corrupt_total));
    json_object_set_new(j, "buffer", b);

    const ems_backfill_stats_t bs = s->backfill;
    json_t *bf = json_object();
    json_object_set_new(bf, "active", json_boolean(bs.active && !bs.exhausted));
    json_object_set_new(bf, "inflight", json_integer(bs.inflight));
    json_object_set_new(bf, "batches", json_integer((json_int_t)bs.batches));
    json_object_set_new(bf, "packets", json_integer((json_int_t)bs.packets));
    json_object_set_new(bf, "restarts", json_integer((json_int_t)bs.restarts));
    json_object_set_new(j, "backfill", bf);

    if (s->energy_ready) {
        const uint64_t *mwh = s->energy_mwh;
        char since[EMS_TIME_STR_MAX] = "";
        ems_time_format(s->energy_since_ms, since, sizeof since);
        json_t *en = json_object();
        for (int i = 0; i < EMS_ENERGY_COUNT; i++) {
            char key[48];
            snprintf(key, sizeof key, "%s_wh", ems_edge_energy_name((ems_energy_counter_t)i));
            json_object_set_new(en, key, json_real((double)mwh[i] / 1000.0));
        }
        json_object_set_new(en, "since", json_string(since));
        json_t *ceil = json_object();
        for (int i = 0; i < EMS_ENERGY_COUNT; i++) {
            char key[48];
            snprintf(key, sizeof key, "%s_wh", ems_edge_energy_name((ems_energy_counter_t)i));
            json_object_set_new(ceil, key, json_real((double)s->energy_ceiling_mwh[i] / 1000.0));
        }
        json_object_set_new(en, "saved_ceiling", ceil);
        json_object_set_new(en, "saves", json_integer((json_int_t)s->energy_saves));
        json_object_set_new(en, "save_failing", json_boolean(s->energy_save_failing));
        json_object_set_new(en, "dt_capped", json_integer((json_int_t)s->energy_dt_capped));
        json_object_set_new(j, "energy", en);
    }
    json_object_set_new(j, "ticks", json_integer((json_int_t)s->ticks));
    json_object_set_new(j, "ticks_skipped", json_integer((json_int_t)s->ticks_skipped));
    json_object_set_new(j, "results_waiting", json_integer(s->results_waiting));
    json_t *last = s->have_last ? json_loadb(s->last_json, s->last_len, 0, NULL) : NULL;
    json_object_set_new(j, "last_telemetry", last ? last : json_null());

    char *text = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(10));
    json_decref(j);
    if (!text)
        return EMS_ENOMEM;
    int rc = ems_buf_append_str(out, text);
    if (rc == 0)
        rc = ems_buf_append_str(out, "\n");
    free(text);
    return rc;
}

#define M_GAUGE(name, help) "# HELP " name " " help "\n# TYPE " name " gauge\n"
#define M_COUNTER(name, help) "# HELP " name " " help "\n# TYPE " name " counter\n"

int ems_edge_status_metrics(const ems_edge_status_t *s, ems_buf_t *out)
{
    int rc = 0;
#define P(...)                                                                                     \
    do {                                                                                           \
        if (rc == 0)                                                                               \
            rc = ems_buf_appendf(out, __VA_ARGS__);                                                \
    } while (0)
    P(M_GAUGE("ems_edge_info",
              "Device and firmware") "ems_edge_info{device_id=\"%s\",firmware=\"%s\"} 1\n",
      s->device_id, EMS_EDGE_FIRMWARE);
    P(M_GAUGE("ems_edge_state", "1 for the current state of the state machine"));
    for (int i = 0; i < EMS_STATE_COUNT; i++)
        P("ems_edge_state{state=\"%s\"} %d\n", ems_state_name((ems_state_t)i),
          s->state == (ems_state_t)i);
    P(M_GAUGE("ems_edge_error_flag", "1 for each error flag in the last packet"));
    for (unsigned i = 0; i < EMS_FAULT_COUNT; i++)
        P("ems_edge_error_flag{flag=\"%s\"} %d\n", ems_fault_name(1u << i),
          s->have_last && (s->error_flags & (1u << i)) ? 1 : 0);
    P(M_GAUGE("ems_edge_setpoint_watts",
              "Battery power commanded, + = charge") "ems_edge_setpoint_watts %g\n",
      s->have_last ? s->setpoint_w : 0.0);
    ems_telemetry_t t;
    if (s->have_last && ems_telemetry_decode(s->last_json, s->last_len, &t, NULL) == 0) {
        P(M_GAUGE("ems_edge_battery_soc_percent",
                  "State of charge") "ems_edge_battery_soc_percent %g\n",
          t.battery_soc);
        P(M_GAUGE("ems_edge_battery_power_watts",
                  "Battery power, + = charging") "ems_edge_battery_power_watts %g\n",
          t.battery_power);
        P(M_GAUGE("ems_edge_battery_voltage_volts",
                  "Pack voltage") "ems_edge_battery_voltage_volts %g\n",
          t.battery_voltage);
        P(M_GAUGE("ems_edge_battery_current_amperes",
                  "Pack current, + = charging") "ems_edge_battery_current_amperes %g\n",
          t.battery_current);
        if (t.has_battery_temperature)
            P(M_GAUGE("ems_edge_battery_temperature_celsius",
                      "Pack temperature") "ems_edge_battery_temperature_celsius %g\n",
              t.battery_temperature);
        P(M_GAUGE("ems_edge_grid_power_watts",
                  "Grid power, - = exporting") "ems_edge_grid_power_watts %g\n",
          t.grid_power);
        P(M_GAUGE("ems_edge_grid_voltage_volts", "Grid voltage") "ems_edge_grid_voltage_volts %g\n",
          t.grid_voltage);
        P(M_GAUGE("ems_edge_grid_frequency_hertz",
                  "Grid frequency") "ems_edge_grid_frequency_hertz %g\n",
          t.grid_frequency);
    }
    if (s->energy_ready) {
        const uint64_t *mwh = s->energy_mwh;
        static const char *const help[EMS_ENERGY_COUNT] = {
            "Energy into the battery", "Energy out of the battery", "Energy bought from the grid",
            "Energy sold to the grid"};
        for (int i = 0; i < EMS_ENERGY_COUNT; i++) {
            const char *nm = ems_edge_energy_name((ems_energy_counter_t)i);
            P("# HELP ems_edge_energy_%s_wh_total %s, Wh (as in the packets)\n"
              "# TYPE ems_edge_energy_%s_wh_total counter\n"
              "ems_edge_energy_%s_wh_total %.3f\n",
              nm, help[i], nm, nm, (double)mwh[i] / 1000.0);
        }
        P(M_COUNTER("ems_edge_energy_saves_total",
                    "Energy ceilings written to the state file") "ems_edge_energy_saves_total "
                                                                 "%llu\n",
          (unsigned long long)s->energy_saves);
    }
    P(M_GAUGE("ems_edge_clock_synced",
              "1 when packets carry clock_synced=true") "ems_edge_clock_synced %d\n",
      s->clock_synced ? 1 : 0);
    ems_uplink_stats_t us;
    memset(&us, 0, sizeof us);
    if (s->have_link)
        us = s->link;
    P(M_GAUGE("ems_edge_link_up", "1 while the cloud link is ready") "ems_edge_link_up %d\n",
      us.state == EMS_UPLINK_READY);
    P(M_COUNTER("ems_edge_link_attempts_total",
                "Connection attempts") "ems_edge_link_attempts_total %llu\n",
      (unsigned long long)us.attempts);
    P(M_COUNTER("ems_edge_link_reconnects_total",
                "Links made after the first") "ems_edge_link_reconnects_total %llu\n",
      (unsigned long long)us.reconnects);
    P(M_COUNTER("ems_edge_link_failures_total",
                "Attempts that failed") "ems_edge_link_failures_total %llu\n",
      (unsigned long long)us.failures);
    P(M_COUNTER("ems_edge_link_drops_total",
                "Ready links that ended") "ems_edge_link_drops_total %llu\n",
      (unsigned long long)us.drops);
    P(M_COUNTER("ems_edge_messages_in_total",
                "Messages from the gateway") "ems_edge_messages_in_total %llu\n",
      (unsigned long long)us.msgs_in);
    P(M_COUNTER("ems_edge_messages_out_total",
                "Messages to the gateway") "ems_edge_messages_out_total %llu\n",
      (unsigned long long)us.msgs_out);
    P(M_COUNTER(
          "ems_edge_messages_bad_total",
          "Messages from the gateway that were not valid") "ems_edge_messages_bad_total %llu\n",
      (unsigned long long)(us.bad_in + s->ignored_msgs));
    P(M_COUNTER("ems_edge_ticks_total", "Ticks run") "ems_edge_ticks_total %llu\n",
      (unsigned long long)s->ticks);
    P(M_COUNTER("ems_edge_ticks_skipped_total",
                "Ticks skipped after a stall") "ems_edge_ticks_skipped_total %llu\n",
      (unsigned long long)s->ticks_skipped);
    P(M_COUNTER("ems_edge_packets_total", "Telemetry packets made") "ems_edge_packets_total %llu\n",
      (unsigned long long)s->packets);
    P(M_COUNTER("ems_edge_packets_live_total",
                "Packets sent live") "ems_edge_packets_live_total %llu\n",
      (unsigned long long)s->live_sent);
    P(M_COUNTER("ems_edge_store_errors_total",
                "Packets the buffer failed to store") "ems_edge_store_errors_total %llu\n",
      (unsigned long long)s->store_errors);
    P(M_COUNTER("ems_edge_commands_total",
                "Valid commands received") "ems_edge_commands_total %llu\n",
      (unsigned long long)s->commands);
    P(M_COUNTER("ems_edge_commands_invalid_total",
                "Invalid commands received") "ems_edge_commands_invalid_total %llu\n",
      (unsigned long long)s->commands_invalid);
    P(M_GAUGE("ems_edge_command_results_waiting",
              "Results waiting for the link") "ems_edge_command_results_waiting %u\n",
      s->results_waiting);
    const ems_store_stats_t ss = s->buffer;
    P(M_GAUGE("ems_edge_buffer_packets",
              "Unacknowledged packets in the buffer") "ems_edge_buffer_packets %llu\n",
      (unsigned long long)ss.pending);
    P(M_GAUGE("ems_edge_buffer_next_seq",
              "The seq of the next packet") "ems_edge_buffer_next_seq %llu\n",
      (unsigned long long)ss.next_seq);
    P(M_GAUGE("ems_edge_buffer_file_bytes",
              "Size of the buffer file") "ems_edge_buffer_file_bytes %llu\n",
      (unsigned long long)ss.file_bytes);
    P(M_COUNTER("ems_edge_buffer_acked_total",
                "Packets deleted after an ack") "ems_edge_buffer_acked_total %llu\n",
      (unsigned long long)ss.acked_total);
    P(M_COUNTER("ems_edge_buffer_nacked_total",
                "Packets refused by the cloud") "ems_edge_buffer_nacked_total %llu\n",
      (unsigned long long)ss.nacked_total);
    P(M_COUNTER("ems_edge_buffer_evicted_total",
                "Packets dropped unsent: buffer full") "ems_edge_buffer_evicted_total %llu\n",
      (unsigned long long)ss.evicted_total);
    P(M_COUNTER("ems_edge_buffer_expired_total",
                "Packets dropped unsent: too old") "ems_edge_buffer_expired_total %llu\n",
      (unsigned long long)ss.expired_total);
    P(M_COUNTER("ems_edge_buffer_corrupt_total",
                "Packets dropped: bad checksum") "ems_edge_buffer_corrupt_total %llu\n",
      (unsigned long long)ss.corrupt_total);
    const ems_backfill_stats_t bs = s->backfill;
    P(M_COUNTER("ems_edge_backfill_batches_total",
                "Backfill batches sent") "ems_edge_backfill_batches_total %llu\n",
      (unsigned long long)bs.batches);
    P(M_COUNTER("ems_edge_backfill_packets_total",
                "Packets sent in backfill batches") "ems_edge_backfill_packets_total %llu\n",
      (unsigned long long)bs.packets);
    P(M_COUNTER("ems_edge_backfill_restarts_total",
                "Resends after an ack timeout") "ems_edge_backfill_restarts_total %llu\n",
      (unsigned long long)bs.restarts);
    P(M_GAUGE("ems_edge_backfill_inflight",
              "Backfill batches awaiting their ack") "ems_edge_backfill_inflight %u\n",
      bs.inflight);
#undef P
    if (rc == 0 && s->hwio)
        rc = ems_hwio_metrics(s->hwio, out);
    return rc;
}
