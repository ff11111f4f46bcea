/*
 * The C test program for libhandoff's ABI: codec (golden vectors, bad
 * frames, encode limits), field accessors, the frame reader and the journal.
 *
 * usage: test_codec VECTORS_DIR
 *
 * Prints one line per check group and, last, "N passed, M failed"; exits 0
 * only if every check passed.
 */
#include "check.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *vectors_dir;
const char *scratch_dir;

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0)
        perror(path);
    return 0;
}

int main(int argc, char **argv)
{
    const char *tmp = getenv("TMPDIR");
    char *scratch;

    if (argc != 2) {
        fprintf(stderr, "usage: %s VECTORS_DIR\n", argv[0]);
        return 2;
    }
    /* line-buffered, so the group lines interleave with failure details */
    setvbuf(stdout, NULL, _IOLBF, 0);
    vectors_dir = argv[1];

    scratch = format("%s/handoff-c-test.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(scratch)) {
        perror("mkdtemp");
        return 2;
    }
    /* 0755: the read-only-directory test runs part of itself as nobody */
    chmod(scratch, 0755);
    scratch_dir = scratch;
    printf("libhandoff %s, vectors from %s, scratch %s\n", handoff_version(), vectors_dir,
           scratch_dir);

    test_vectors();
    test_bad_frames();
    test_encode_errors();
    test_accessor_errors();
    test_null_and_statics();
    test_frame_reader();
    test_journal_vectors();
    test_journal_errors();
    test_requests();

    if (checks_failed == 0)
        nftw(scratch_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    else
        printf("scratch directory kept: %s\n", scratch_dir);
    free(scratch);

    printf("%lu passed, %lu failed\n", checks_passed, checks_failed);
    return checks_failed == 0 ? 0 : 1;
}
