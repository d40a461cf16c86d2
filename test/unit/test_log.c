/* test_log.c: the log line format (common/log.c). */
#include "ems_test.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Logs one line with stderr redirected into a pipe and returns it. */
static void log_line(const char *journal_stream_of_pipe, char *out, size_t cap)
{
    int fds[2];
    EMS_CHECK(pipe(fds) == 0);
    EMS_CHECK(dup2(fds[1], STDERR_FILENO) == STDERR_FILENO);
    if (journal_stream_of_pipe) {
        if (strcmp(journal_stream_of_pipe, "self") == 0) {
            struct stat st;
            char v[64];
            EMS_CHECK(fstat(STDERR_FILENO, &st) == 0);
            snprintf(v, sizeof v, "%llu:%llu", (unsigned long long)st.st_dev,
                     (unsigned long long)st.st_ino);
            setenv("JOURNAL_STREAM", v, 1);
        } else {
            setenv("JOURNAL_STREAM", journal_stream_of_pipe, 1);
        }
    } else {
        unsetenv("JOURNAL_STREAM");
    }
    ems_log_init("ems-test", EMS_LOG_INFO);
    ems_log_warn("battery %d", 42);
    ems_log_debug("not shown at info");
    ssize_t n = read(fds[0], out, cap - 1);
    EMS_CHECK(n > 0);
    out[n] = '\0';
}

static void test_plain_stderr_has_priority_and_time(void)
{
    char line[512];
    log_line(NULL, line, sizeof line);
    EMS_CHECK(strncmp(line, "<4>", 3) == 0);
    EMS_CHECK(line[3] >= '2' && line[3] <= '9'); /* a year follows */
    EMS_CHECK(strstr(line, "Z ems-test warn: battery 42\n") != NULL);
    EMS_CHECK(strstr(line, "not shown") == NULL);
}

static void test_journal_stream_drops_the_time(void)
{
    char line[512];
    log_line("self", line, sizeof line);
    EMS_CHECK_STR(line, "<4>ems-test warn: battery 42\n");
}

static void test_inherited_journal_stream_for_another_file_keeps_the_time(void)
{
    char line[512];
    log_line("1:2", line, sizeof line); /* not our stderr's device and inode */
    EMS_CHECK(strstr(line, "Z ems-test warn: battery 42\n") != NULL);
    EMS_CHECK(line[3] != 'e');
}

/* 2,000 repeated warnings in one interval are two lines: the first, and
 * a summary with the count once the interval is over. */
static void test_limited_summarises(void)
{
    int fds[2];
    EMS_CHECK(pipe(fds) == 0);
    EMS_CHECK(dup2(fds[1], STDERR_FILENO) == STDERR_FILENO);
    unsetenv("JOURNAL_STREAM");
    ems_log_init("ems-test", EMS_LOG_INFO);
    ems_log_limit_t l = {.what = "device refused", .interval_ms = 10000};
    int written = 0;
    for (int i = 0; i < 2000; i++)
        written += ems_log_limited(&l, 1000 + i, EMS_LOG_WARN, "device d%d refused", i);
    EMS_CHECK_INT(written, ==, 1);
    ems_log_limit_flush(&l, 5000); /* interval not over: nothing */
    ems_log_limit_flush(&l, 11000);
    ems_log_limit_flush(&l, 30000); /* nothing more to say */
    close(STDERR_FILENO);
    close(fds[1]);
    char buf[4096];
    size_t n = 0;
    ssize_t r;
    while ((r = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = '\0';
    int lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += buf[i] == '\n';
    EMS_CHECK_INT(lines, ==, 2);
    EMS_CHECK(strstr(buf, "device d0 refused") != NULL);
    EMS_CHECK(strstr(buf, "device refused: and 1999 more in the last 10 s") != NULL);
}

/* A burst of 3: the first three lines of an interval are written, the
 * rest counted; the next interval starts a new burst. */
static void test_limited_burst(void)
{
    int fds[2];
    EMS_CHECK(pipe(fds) == 0);
    EMS_CHECK(dup2(fds[1], STDERR_FILENO) == STDERR_FILENO);
    unsetenv("JOURNAL_STREAM");
    ems_log_init("ems-test", EMS_LOG_INFO);
    ems_log_limit_t l = {.what = "bad message", .interval_ms = 10000, .burst = 3};
    int written = 0;
    for (int i = 0; i < 10; i++)
        written += ems_log_limited(&l, 1000 + i, EMS_LOG_WARN, "bad message m%d", i);
    EMS_CHECK_INT(written, ==, 3);
    written = ems_log_limited(&l, 12000, EMS_LOG_WARN, "bad message m%d", 10); /* new interval */
    EMS_CHECK_INT(written, ==, 1);
    close(STDERR_FILENO);
    close(fds[1]);
    char buf[4096];
    size_t n = 0;
    ssize_t r;
    while ((r = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = '\0';
    EMS_CHECK(strstr(buf, "bad message m0") && strstr(buf, "bad message m2"));
    EMS_CHECK(strstr(buf, "bad message m3") == NULL);
    EMS_CHECK(strstr(buf, "bad message: and 7 more in the last 11 s") != NULL);
    EMS_CHECK(strstr(buf, "bad message m10") != NULL);
}

static void test_level_names(void)
{
    ems_log_level_t l;
    EMS_CHECK(ems_log_level_parse("debug", &l) == 0 && l == EMS_LOG_DEBUG);
    EMS_CHECK(ems_log_level_parse("warning", &l) == 0 && l == EMS_LOG_WARN);
    EMS_CHECK(ems_log_level_parse("loud", &l) < 0);
}

int main(void)
{
    EMS_RUN(test_plain_stderr_has_priority_and_time);
    EMS_RUN(test_journal_stream_drops_the_time);
    EMS_RUN(test_inherited_journal_stream_for_another_file_keeps_the_time);
    EMS_RUN(test_level_names);
    EMS_RUN(test_limited_summarises);
    EMS_RUN(test_limited_burst);
    EMS_TEST_END();
}
