/* The journal: the 6 golden phases both ways, corrupt and missing files,
 * directories that must be created or cannot be written. */
#include "check.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define PHASES 6
static const char *const JOURNAL_FILES[PHASES] = {
    "0_negotiating.bin", "1_draining.bin",   "2_sealing.bin",
    "3_awaiting_ready.bin", "4_committed.bin", "5_resuming_after_abort.bin"};

typedef union {
    bool b;
    unsigned char raw;
} bool_out;
#define BOOL_SENTINEL 0x5A

/* The record journal/N_*.bin holds (tests/vectors/README.md). */
static void expected_journal(unsigned n, handoff_journal *j)
{
    memset(j, 0, sizeof *j);
    memcpy(j->handoff_id, VECTOR_ID, 16);
    j->phase = n;
    j->incumbent_pid = 1234 + n;
    j->has_successor_pid = n % 2 == 0;
    j->successor_pid = n % 2 == 0 ? 5678 : 0;
    j->started_at_unix_ms = UINT64_C(1700000000000);
}

/* Fill an out-parameter with a recognisable pattern. */
static void fill_sentinel(handoff_journal *j)
{
    memset(j, 0xA5, sizeof *j);
    j->has_successor_pid = true;
}

static bool untouched(const handoff_journal *j)
{
    handoff_journal ref;
    fill_sentinel(&ref);
    return memcmp(j, &ref, sizeof ref) == 0;
}

static bool journal_equal(const handoff_journal *got, const handoff_journal *want)
{
    bool ok = memcmp(got->handoff_id, want->handoff_id, 16) == 0 && got->phase == want->phase &&
              got->incumbent_pid == want->incumbent_pid &&
              got->has_successor_pid == want->has_successor_pid &&
              got->started_at_unix_ms == want->started_at_unix_ms &&
              (!want->has_successor_pid || got->successor_pid == want->successor_pid);
    if (!ok)
        fprintf(stderr,
                "    journal: phase %u incumbent %u successor %s%u started %llu\n"
                "    expected phase %u incumbent %u successor %s%u started %llu\n",
                (unsigned)got->phase, (unsigned)got->incumbent_pid,
                got->has_successor_pid ? "" : "(none) ", (unsigned)got->successor_pid,
                (unsigned long long)got->started_at_unix_ms, (unsigned)want->phase,
                (unsigned)want->incumbent_pid, want->has_successor_pid ? "" : "(none) ",
                (unsigned)want->successor_pid, (unsigned long long)want->started_at_unix_ms);
    return ok;
}

/* Read `path` expecting the record `want`. */
static void expect_journal(const char *path, const handoff_journal *want)
{
    handoff_error *err = NULL;
    handoff_journal got;
    bool_out found;
    fill_sentinel(&got);
    found.raw = BOOL_SENTINEL;
    if (CHECK_OK(handoff_journal_read(path, &got, &found.b, &err), &err) && CHECK(found.b))
        CHECK(journal_equal(&got, want));
}

/* Read `path` expecting no journal, and the record untouched. */
static void expect_no_journal(const char *path)
{
    handoff_error *err = NULL;
    handoff_journal got;
    bool found = true;
    fill_sentinel(&got);
    CHECK_OK(handoff_journal_read(path, &got, &found, &err), &err);
    CHECK(!found);
    CHECK(untouched(&got));
}

static char *tmp_of(const char *path)
{
    return format("%s.tmp", path);
}

/* ---- the golden phases ------------------------------------------------- */

void test_journal_vectors(void)
{
    unsigned n;
    group_begin("journal vectors: read, write, same bytes");
    for (n = 0; n < PHASES; n++) {
        char *vector = format("%s/journal/%s", vectors_dir, JOURNAL_FILES[n]);
        char *dir = format("%s/vectors-%u", scratch_dir, n);
        char *path = format("%s/state.bin", dir);
        char *tmp = tmp_of(path);
        handoff_error *err = NULL;
        handoff_journal want, copy;
        blob golden, written;

        expected_journal(n, &want);
        expect_journal(vector, &want);

        /* write the record: the same bytes, and no temporary file left */
        if (CHECK_OK(handoff_journal_write(path, &want, &err), &err) &&
            CHECK(read_file(path, &written))) {
            if (CHECK(read_file(vector, &golden))) {
                CHECK_BYTES(written.data, written.len, golden.data, golden.len);
                blob_free(&golden);
            }
            blob_free(&written);
        }
        CHECK(!file_exists(tmp));
        expect_journal(path, &want);

        /* successor_pid is ignored when has_successor_pid is false */
        copy = want;
        if (!copy.has_successor_pid) {
            copy.successor_pid = 0xFFFFFFFFu;
            if (CHECK_OK(handoff_journal_write(path, &copy, &err), &err) &&
                CHECK(read_file(path, &written))) {
                if (CHECK(read_file(vector, &golden))) {
                    CHECK_BYTES(written.data, written.len, golden.data, golden.len);
                    blob_free(&golden);
                }
                blob_free(&written);
            }
        }
        free(vector);
        free(dir);
        free(path);
        free(tmp);
    }
    /* extreme values survive a round trip */
    {
        char *path = format("%s/extremes/state.bin", scratch_dir);
        handoff_error *err = NULL;
        handoff_journal j;
        memset(&j, 0, sizeof j);
        memset(j.handoff_id, 0xff, 16);
        j.phase = HANDOFF_PHASE_RESUMING_AFTER_ABORT;
        j.incumbent_pid = UINT32_MAX;
        j.has_successor_pid = true;
        j.successor_pid = UINT32_MAX;
        j.started_at_unix_ms = UINT64_MAX;
        if (CHECK_OK(handoff_journal_write(path, &j, &err), &err))
            expect_journal(path, &j);
        j.has_successor_pid = true;
        j.successor_pid = 0;
        j.incumbent_pid = 0;
        j.started_at_unix_ms = 0;
        j.phase = HANDOFF_PHASE_NEGOTIATING;
        if (CHECK_OK(handoff_journal_write(path, &j, &err), &err))
            expect_journal(path, &j);
        free(path);
    }
    group_end();
}

/* ---- corrupt journals -------------------------------------------------- */

static void expect_corrupt(const char *path, const uint8_t *bytes, size_t len, const char *what)
{
    handoff_error *err = NULL;
    handoff_journal got;
    bool_out found;
    if (!CHECK(write_file(path, bytes, len)))
        return;
    fill_sentinel(&got);
    found.raw = BOOL_SENTINEL;
    if (!CHECK_ERR_MSG(handoff_journal_read(path, &got, &found.b, &err), &err,
                       HANDOFF_ERR_JOURNAL_CORRUPT, path))
        fprintf(stderr, "    (journal: %s)\n", what);
    CHECK(untouched(&got));
    CHECK(found.raw == BOOL_SENTINEL);
}


static blob journal_vector(unsigned n)
{
    char *name = format("journal/%s", JOURNAL_FILES[n]);
    blob b = read_blob(vectors_dir, name);
    free(name);
    return b;
}

static void corrupt_journals(void)
{
    char *path = format("%s/corrupt/state.bin", scratch_dir);
    char *dir = format("%s/corrupt", scratch_dir);
    unsigned n;
    size_t cut;

    group_begin("journal: truncated, padded, garbage -> CORRUPT");
    CHECK(mkdir(dir, 0755) == 0);
    for (n = 0; n < PHASES; n++) {
        blob file = journal_vector(n);
        uint8_t *bad = copy_bytes(file.data, file.len, file.len);
        char *what;
        /* every prefix, the empty file included */
        for (cut = 0; cut < file.len; cut++) {
            what = format("%s cut to %zu bytes", JOURNAL_FILES[n], cut);
            expect_corrupt(path, file.data, cut, what);
            free(what);
        }
        /* trailing bytes: one zero, or a whole second record */
        bad[file.len] = 0;
        expect_corrupt(path, bad, file.len + 1, "one trailing byte");
        memcpy(bad + file.len, file.data, file.len);
        expect_corrupt(path, bad, 2 * file.len, "two records");
        /* fields out of their domain */
        memcpy(bad, file.data, file.len);
        bad[17] = 6;
        expect_corrupt(path, bad, file.len, "phase 6");
        bad[17] = 0x80; /* an unfinished varint in place of the phase */
        expect_corrupt(path, bad, file.len, "phase varint runs on");
        memcpy(bad, file.data, file.len);
        bad[20] = 2;
        expect_corrupt(path, bad, file.len, "Option tag 2");
        memcpy(bad, file.data, file.len);
        bad[0] = 15;
        expect_corrupt(path, bad, file.len, "handoff id of 15 bytes");
        bad[0] = 17;
        expect_corrupt(path, bad, file.len, "handoff id of 17 bytes");
        free(bad);
        blob_free(&file);
    }
    {
        static const char text[] = "this is not a journal\n";
        uint8_t ff[64];
        memset(ff, 0xff, sizeof ff);
        expect_corrupt(path, ff, 29, "29 bytes of 0xff");
        expect_corrupt(path, ff, sizeof ff, "64 bytes of 0xff");
        expect_corrupt(path, (const uint8_t *)text, sizeof text - 1, "text");
    }
    /* err == NULL: the status alone */
    {
        handoff_journal got;
        bool found = false;
        fill_sentinel(&got);
        CHECK(write_file(path, (const uint8_t *)"x", 1));
        CHECK_ERR(handoff_journal_read(path, &got, &found, NULL), NULL,
                  HANDOFF_ERR_JOURNAL_CORRUPT);
        CHECK(untouched(&got));
    }
    free(path);
    free(dir);
    group_end();
}

static void missing_and_delete(void)
{
    char *path = format("%s/missing/state.bin", scratch_dir);
    char *deeper = format("%s/missing/no/such/dir/state.bin", scratch_dir);
    char *dir = format("%s/missing", scratch_dir);
    handoff_error *err = NULL;
    handoff_journal j;

    group_begin("journal: missing file, idempotent delete");
    expect_no_journal(path);
    expect_no_journal(deeper);
    CHECK(!file_exists(dir)); /* reading creates nothing */
    CHECK_OK(handoff_journal_delete(path, &err), &err);
    CHECK_OK(handoff_journal_delete(deeper, &err), &err);
    CHECK_OK(handoff_journal_delete(path, NULL), NULL);

    expected_journal(HANDOFF_PHASE_COMMITTED, &j);
    if (CHECK_OK(handoff_journal_write(path, &j, &err), &err)) {
        expect_journal(path, &j);
        CHECK_OK(handoff_journal_delete(path, &err), &err);
        CHECK(!file_exists(path));
        CHECK(file_exists(dir)); /* the directory stays */
        CHECK_OK(handoff_journal_delete(path, &err), &err);
        expect_no_journal(path);
    }
    free(path);
    free(deeper);
    free(dir);
    group_end();
}

static void nested_directories(void)
{
    char *path = format("%s/nested/a/b/c/state.bin", scratch_dir);
    char *tmp = tmp_of(path);
    handoff_error *err = NULL;
    handoff_journal j;
    blob written, golden;
    unsigned n;

    group_begin("journal: missing directories are created");
    CHECK(!file_exists(path));
    expected_journal(HANDOFF_PHASE_SEALING, &j);
    if (CHECK_OK(handoff_journal_write(path, &j, &err), &err)) {
        expect_journal(path, &j);
        golden = journal_vector(HANDOFF_PHASE_SEALING);
        if (CHECK(read_file(path, &written))) {
            CHECK_BYTES(written.data, written.len, golden.data, golden.len);
            blob_free(&written);
        }
        blob_free(&golden);
    }
    /* each write replaces the record */
    for (n = 0; n < PHASES; n++) {
        expected_journal(n, &j);
        if (CHECK_OK(handoff_journal_write(path, &j, &err), &err))
            expect_journal(path, &j);
        CHECK(!file_exists(tmp));
    }
    /* a relative path works too (the journal lands in the working dir's
     * subdirectory) */
    {
        char *cwd = getcwd(NULL, 0);
        if (CHECK(cwd != NULL) && CHECK(chdir(scratch_dir) == 0)) {
            expected_journal(HANDOFF_PHASE_DRAINING, &j);
            if (CHECK_OK(handoff_journal_write("relative/state.bin", &j, &err), &err))
                expect_journal("relative/state.bin", &j);
            CHECK_OK(handoff_journal_write("state-here.bin", &j, &err), &err);
            expect_journal("state-here.bin", &j);
            CHECK_OK(handoff_journal_delete("state-here.bin", &err), &err);
            CHECK(chdir(cwd) == 0);
        }
        free(cwd);
    }
    free(path);
    free(tmp);
    group_end();
}

static void invalid_records_and_paths(void)
{
    char *dir = format("%s/invalid", scratch_dir);
    char *path = format("%s/state.bin", dir);
    char *tmp = tmp_of(path);
    char *fresh = format("%s/never-created/state.bin", scratch_dir);
    char *fresh_dir = format("%s/never-created", scratch_dir);
    char *file_as_dir = format("%s/state.bin/inner.bin", dir);
    static const uint32_t bad_phases[] = {6, 7, 255, UINT32_C(0x80000000), UINT32_MAX};
    handoff_error *err = NULL;
    handoff_journal j, bad, out;
    bool_out found;
    size_t i;

    group_begin("journal: invalid records and paths");
    expected_journal(HANDOFF_PHASE_AWAITING_READY, &j);
    CHECK_OK(handoff_journal_write(path, &j, &err), &err);
    for (i = 0; i < sizeof bad_phases / sizeof bad_phases[0]; i++) {
        bad = j;
        bad.phase = bad_phases[i];
        /* over an existing journal: it stays as it was */
        CHECK_ERR(handoff_journal_write(path, &bad, &err), &err, HANDOFF_ERR_INVALID_ARGUMENT);
        expect_journal(path, &j);
        CHECK(!file_exists(tmp));
        /* where there is none: nothing is created, not even the directory */
        CHECK_ERR(handoff_journal_write(fresh, &bad, &err), &err, HANDOFF_ERR_INVALID_ARGUMENT);
        CHECK(!file_exists(fresh_dir));
        CHECK_ERR(handoff_journal_write(fresh, &bad, NULL), NULL, HANDOFF_ERR_INVALID_ARGUMENT);
        CHECK(!file_exists(fresh_dir));
    }

    /* NULL and empty paths */
    CHECK_ERR(handoff_journal_write(NULL, &j, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_journal_read(NULL, &out, &found.b, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_journal_delete(NULL, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_journal_write("", &j, &err), &err, HANDOFF_ERR_INVALID_ARGUMENT);
    CHECK_ERR(handoff_journal_read("", &out, &found.b, &err), &err, HANDOFF_ERR_INVALID_ARGUMENT);
    CHECK_ERR(handoff_journal_delete("", &err), &err, HANDOFF_ERR_INVALID_ARGUMENT);
    CHECK_ERR(handoff_journal_write(NULL, &j, NULL), NULL, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_journal_delete("", NULL), NULL, HANDOFF_ERR_INVALID_ARGUMENT);
    /* NULL record and out-parameters: nothing written */
    fill_sentinel(&out);
    found.raw = BOOL_SENTINEL;
    CHECK_ERR(handoff_journal_write(fresh, NULL, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK(!file_exists(fresh_dir));
    CHECK_ERR(handoff_journal_read(path, NULL, &found.b, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK(found.raw == BOOL_SENTINEL);
    CHECK_ERR(handoff_journal_read(path, &out, NULL, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK(untouched(&out));
    CHECK_ERR(handoff_journal_read(NULL, &out, &found.b, NULL), NULL, HANDOFF_ERR_NULL_POINTER);
    CHECK(untouched(&out) && found.raw == BOOL_SENTINEL);

    /* OS errors name the path: a directory where the journal should be, a
     * regular file where a directory should be */
    CHECK_ERR_MSG(handoff_journal_read(dir, &out, &found.b, &err), &err, HANDOFF_ERR_IO, dir);
    CHECK(untouched(&out) && found.raw == BOOL_SENTINEL);
    CHECK_ERR_MSG(handoff_journal_write(dir, &j, &err), &err, HANDOFF_ERR_IO, dir);
    CHECK(file_exists(dir));
    CHECK_ERR_MSG(handoff_journal_write(file_as_dir, &j, &err), &err, HANDOFF_ERR_IO, path);
    CHECK_ERR_MSG(handoff_journal_read(file_as_dir, &out, &found.b, &err), &err, HANDOFF_ERR_IO,
                  file_as_dir);
    CHECK(untouched(&out) && found.raw == BOOL_SENTINEL);
    CHECK_ERR_MSG(handoff_journal_delete(dir, &err), &err, HANDOFF_ERR_IO, dir);
    expect_journal(path, &j);

    free(dir);
    free(path);
    free(tmp);
    free(fresh);
    free(fresh_dir);
    free(file_as_dir);
    group_end();
}

/* The checks of a journal write refused by the file system, run by a
 * process that cannot write `dir`: the write fails naming the path, and the
 * journal already there reads back intact. */
static void refused_write_checks(const char *dir, const handoff_journal *old)
{
    char *path = format("%s/state.bin", dir);
    char *tmp = tmp_of(path);
    char *sub = format("%s/sub", dir);
    char *sub_path = format("%s/sub/state.bin", dir);
    handoff_error *err = NULL;
    handoff_journal newer;

    CHECK(access(dir, W_OK) != 0); /* the setup really is read-only */
    expected_journal(HANDOFF_PHASE_COMMITTED, &newer);
    newer.incumbent_pid = 999;
    CHECK_ERR_MSG(handoff_journal_write(path, &newer, &err), &err, HANDOFF_ERR_IO, path);
    CHECK_ERR(handoff_journal_write(path, &newer, NULL), NULL, HANDOFF_ERR_IO);
    expect_journal(path, old);
    CHECK(!file_exists(tmp));
    /* a directory that would have to be created in it */
    CHECK_ERR_MSG(handoff_journal_write(sub_path, &newer, &err), &err, HANDOFF_ERR_IO, sub);
    CHECK(!file_exists(sub));
    /* deleting is refused too, and leaves the journal */
    CHECK_ERR_MSG(handoff_journal_delete(path, &err), &err, HANDOFF_ERR_IO, path);
    expect_journal(path, old);
    free(path);
    free(tmp);
    free(sub);
    free(sub_path);
}

static void read_only_directory(void)
{
    char *dir = format("%s/read-only", scratch_dir);
    char *path = format("%s/state.bin", dir);
    handoff_error *err = NULL;
    handoff_journal old;

    group_begin("journal: a directory it cannot write -> IO");
    expected_journal(HANDOFF_PHASE_SEALING, &old);
    if (!CHECK(mkdir(dir, 0755) == 0) || !CHECK(chmod(dir, 0755) == 0) ||
        !CHECK_OK(handoff_journal_write(path, &old, &err), &err))
        goto out;

    if (geteuid() == 0) {
        /* root ignores permission bits: a child drops to nobody first */
        int fds[2];
        pid_t pid;
        int status = 0;
        unsigned long counts[2] = {0, 0};
        ssize_t got;
        const gid_t nogroup = 65534;
        const uid_t nobody = 65534;

        if (!CHECK(pipe(fds) == 0))
            goto out;
        fflush(stdout);
        fflush(stderr);
        pid = fork();
        if (pid == 0) {
            unsigned long passed0 = checks_passed, failed0 = checks_failed;
            close(fds[0]);
            if (CHECK(setgroups(1, &nogroup) == 0) && CHECK(setgid(nogroup) == 0) &&
                CHECK(setuid(nobody) == 0) && CHECK(geteuid() == nobody) &&
                CHECK(getegid() == nogroup))
                refused_write_checks(dir, &old);
            counts[0] = checks_passed - passed0;
            counts[1] = checks_failed - failed0;
            if (write(fds[1], counts, sizeof counts) != (ssize_t)sizeof counts)
                _exit(3);
            fflush(stdout);
            fflush(stderr);
            /* _exit: the child shares the parent's heap; leak checking
             * belongs to the parent, and LeakSanitizer cannot trace a
             * process that changed its uid. */
            _exit(0);
        }
        close(fds[1]);
        if (!CHECK(pid > 0)) {
            close(fds[0]);
            goto out;
        }
        got = read(fds[0], counts, sizeof counts);
        close(fds[0]);
        CHECK(waitpid(pid, &status, 0) == pid);
        if (!CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0))
            fprintf(stderr, "    (child status %#x)\n", (unsigned)status);
        if (CHECK(got == (ssize_t)sizeof counts)) {
            CHECK(counts[0] > 0);
            record_external(counts[0], counts[1]);
        }
    } else {
        /* not root: the permission bits are enough */
        if (CHECK(chmod(dir, 0555) == 0)) {
            refused_write_checks(dir, &old);
            CHECK(chmod(dir, 0755) == 0);
        }
    }
    /* back in the parent: the old journal is still there */
    expect_journal(path, &old);
out:
    free(dir);
    free(path);
    group_end();
}

void test_journal_errors(void)
{
    corrupt_journals();
    missing_and_delete();
    nested_directories();
    invalid_records_and_paths();
    read_only_directory();
}
